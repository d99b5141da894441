"""`train` console script.

    train run stage1   --store S --out RUN [--recipe NAME|FILE] [--model NAME] [KEY=VALUE ...]
    train run stage2   --store S --out RUN --teacher CKPT [--iteration K] [KEY=VALUE ...]
    train run finetune --store S --out RUN --init CKPT --mode audio|video|av [KEY=VALUE ...]
    train export | average | bench ...   (train/export.py, train/bench.py)

A CKPT is a checkpoint file or a RUN directory (its ``checkpoints/last.pt``). Re-running a
command into an existing RUN resumes from its last checkpoint and says so on the first line;
``--fresh`` starts over. Every ``run`` works under ``torchrun`` unchanged. Bad input (a store
that does not exist, an empty split, an unknown recipe key, a teacher of the wrong model or
size) is a one-line error before any training work, exit status 2.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import os
import sys
from pathlib import Path

# subcommands owned by other modules: name -> "module:function(argv) -> int"
PLUGINS = {
    "export": ("train.export:main_export", "encoder-only weights of a run or checkpoint"),
    "average": ("train.export:main_average", "weight averaging over a run's epoch files"),
    "bench": ("train.bench:main", "trainer benchmarks (step time, overhead, throughput)"),
}


def _run_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run (or resume) a training stage")
    stages = run.add_subparsers(dest="stage", required=True)
    for stage, text in (("stage1", "MAViL stage 1 (raw targets) or a peer's pre-training"),
                        ("stage2", "MAViL stage 2: a student learns a frozen teacher's features"),
                        ("finetune", "fine-tune a pre-trained encoder on the store's labels")):
        p = stages.add_parser(stage, help=text, description=text)
        p.add_argument("--store", required=True, help="store path or URL")
        p.add_argument("--out", required=True, type=Path, help="the RUN directory")
        p.add_argument("--recipe", help="recipe name in train/recipes (e.g. tiny) or a YAML file")
        p.add_argument("--fresh", action="store_true", help="discard RUN's state, start over")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda")
        if stage == "stage1":
            p.add_argument("--model", help="mavil | cav_mae | av_mae | audio_mae | video_mae")
        if stage == "stage2":
            p.add_argument("--teacher", required=True, help="stage-1 / stage-2 CKPT or RUN")
            p.add_argument("--iteration", type=int, help="K (checked against the teacher chain)")
        if stage == "finetune":
            p.add_argument("--init", required=True, help="pre-trained CKPT or RUN")
            p.add_argument("--mode", required=True, choices=("audio", "video", "av"))
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="recipe overrides, e.g. optim.base_lr=1e-4 train.max_steps=10")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train", description="MAViL / peer-model training")
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    for name, (_, text) in PLUGINS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def _plugin(name: str, argv: list[str]) -> int:
    target, _ = PLUGINS[name]
    module, _, func = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        print(f"train {name}: not available in this checkout ({target})", file=sys.stderr)
        return 2
    return int(fn(argv) or 0)


def _say(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":
        print(message, flush=True)


def _init_family(init: str) -> str | None:
    """The model family of a fine-tuning init checkpoint (picks e.g. tiny_cav_mae_finetune)."""
    from train.trained import load_checkpoint

    name = load_checkpoint(init)["config"].get("model", {}).get("name")
    return name if name and name != "mavil" else None


def run_command(args: argparse.Namespace) -> int:
    from train.checkpoints import CheckpointError
    from train.config import ConfigError, load_config
    from train.data import DataError
    from train.loop import TrainingError, config_summary, train
    from train.resume import last_file
    from train.stages import StageError

    keys = {"data.store": args.store}
    family = None
    if args.stage == "stage1" and args.model:
        keys["model.name"] = family = args.model
    if args.stage == "stage2":
        keys.update({"stage2.teacher": args.teacher, "stage2.iteration": args.iteration})
    try:
        if args.stage == "finetune":
            keys.update({"finetune.init": args.init, "finetune.mode": args.mode})
            family = _init_family(args.init)
        cfg = load_config(args.stage, args.recipe, args.overrides, keys, model=family)
        cfg.meta.command = ["train", "run", args.stage, *sys.argv[3:]] if sys.argv else []
        if args.fresh:
            _say(f"starting {args.out} afresh (--fresh): {config_summary(cfg)}")
        elif last_file(args.out).exists():
            _say(f"resuming {args.out} from {last_file(args.out)}")
        else:
            _say(f"starting {args.out}: {config_summary(cfg)}")
        from train.config import git_revision

        cfg.meta.git_revision = git_revision()
        train(cfg, args.out, device=args.device, fresh=args.fresh)
    except (ConfigError, DataError, StageError, CheckpointError, TrainingError) as exc:
        print(f"train: error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command itself: a quick exit, as pipeline.cli.main
        atexit.register(gc.freeze)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PLUGINS:
        return _plugin(argv[0], argv[1:])
    args = _parser().parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    raise SystemExit(main())
