"""Fine-tune-and-score protocols of the audio-only columns of MAViL Table 8 / 10.

    evaluate protocol esc50-5fold --store S --out DIR [--recipe R] [--init CKPT|scratch]
    evaluate protocol spc         --store S --out DIR ...     (train -> test list)
    evaluate protocol holdout     --store S --out DIR --train-split train --test-split eval

* ``esc50-5fold``: ESC-50's 5-fold cross-validation (Piczak 2015; AST ``prep_esc50.py`` /
  AudioMAE): for k = 1..5, fine-tune on the splits ``fold{j}``, j != k, score top-1 on
  ``fold{k}``; report each fold, the mean and the standard deviation over the folds.
* ``spc``: Speech Commands (``pipeline build-speechcommands``): fine-tune on ``train``,
  top-1 on ``test`` (the testing_list.txt files, or SUPERB's test set).
* ``holdout``: any store, one train split and one test split (e.g. speech_prompts).

Each fine-tune is a plain ``train run finetune`` (train/loop.py) into ``DIR/<round>/run``;
a finished round is not run again (its ``score.json`` is kept), so a killed protocol resumes.
Top-1 is ``eval.metrics.classification_metrics`` (scikit-learn ``top_k_accuracy_score``) of
the last checkpoint's logits on every test clip (one 'audio_eval' view per clip: no
augmentation, the run's normalisation and input length). ``--seeds`` repeats every round
per seed; the figures are then over folds x seeds, and per seed.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eval.checks import EvalError

PROTOCOLS = ("esc50-5fold", "spc", "holdout")
DEFAULT_RECIPE = "tiny_audio_finetune"
_FOLD = re.compile(r"^fold(\d+)$")


@dataclass
class ProtocolOptions:
    store: str
    out: str
    recipe: str = DEFAULT_RECIPE
    init: str = "scratch"                 # a pre-trained CKPT / RUN, or "scratch"
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    device: str = "cpu"
    batch_size: int = 32


@dataclass
class Round:
    name: str          # e.g. "fold3-seed0"
    train_split: str   # comma-joined split names (Store.filter)
    test_split: str
    seed: int


def fold_names(store: Any) -> list[str]:
    """The store's ``fold<k>`` split names in k order (ESC-50: fold1 .. fold5)."""
    splits = set(store.index().column("split").to_pylist())
    folds = sorted((s for s in splits if _FOLD.match(s)), key=lambda s: int(s[4:]))
    return folds


def plan_rounds(name: str, store: Any, seeds: list[int], train_split: str = "train",
                test_split: str = "test") -> list[Round]:
    if name == "esc50-5fold":
        folds = fold_names(store)
        if folds != [f"fold{k}" for k in range(1, 6)]:
            raise EvalError(f"esc50-5fold needs splits fold1..fold5 (pipeline build-esc50); "
                            f"the store has {folds or 'none'}")
        return [Round(f"{f}-seed{s}", ",".join(g for g in folds if g != f), f, s)
                for f in folds for s in seeds]
    if name == "spc":
        train_split, test_split = "train", "test"
    elif name != "holdout":
        raise EvalError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return [Round(f"{test_split}-seed{s}", train_split, test_split, s) for s in seeds]


def finetune(opts: ProtocolOptions, rnd: Round, run_dir: Path) -> Path:
    """One ``train run finetune`` on the round's train split (resumes an unfinished run)."""
    from train.config import load_config
    from train.loop import train

    keys = {"data.store": opts.store, "finetune.init": opts.init, "finetune.mode": "audio",
            "data.split": rnd.train_split, "train.seed": rnd.seed}
    cfg = load_config("finetune", opts.recipe, list(opts.overrides), keys)
    cfg.meta.protocol_round = rnd.name
    train(cfg, run_dir, device=opts.device)
    return run_dir


@torch.no_grad()
def score(run_dir: Path, store_path: str, split: str, batch_size: int = 32,
          device: str = "cpu") -> dict[str, Any]:
    """Top-1 / top-5 of a fine-tuned run's last checkpoint on ``split`` of the store."""
    from eval.metrics import classification_metrics
    from store import open_store
    from store.datasets import ClipDataset
    from store.jpeg import collate
    from store.views.presets import make_view
    from train.trained import load_trained

    model, config = load_trained(run_dir, map_location=device)
    data = config["data"]
    store = open_store(store_path)
    view = make_view("audio_eval", norm=data["norm"], labels=False)
    view = replace(view, audio=replace(view.audio, target_frames=int(data["audio_frames"])))
    ds = ClipDataset(store, view, split=split)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                         collate_fn=collate)
    scores = [model(audio=batch["audio"].to(device)).float().cpu() for batch in loader]
    logits = torch.cat(scores).numpy()
    m = classification_metrics(logits, ds.labels, single_label=True)
    return {"split": split, "clips": len(ds), "top1": float(m["top1"]),
            "top5": float(m.get("top5", float("nan"))), "run": str(run_dir)}


def run_protocol(name: str, opts: ProtocolOptions, train_split: str = "train",
                 test_split: str = "test") -> dict[str, Any]:
    """Every round (fine-tune + score), then the summary; writes DIR/report.{json,md}."""
    from store import open_store

    out = Path(opts.out)
    store = open_store(opts.store)
    rounds = plan_rounds(name, store, list(opts.seeds), train_split, test_split)
    results = []
    for rnd in rounds:
        done = out / rnd.name / "score.json"
        if done.is_file():
            results.append(json.loads(done.read_text()))
            continue
        run_dir = finetune(opts, rnd, out / rnd.name / "run")
        res = {"round": rnd.name, "train_split": rnd.train_split, "seed": rnd.seed,
               **score(run_dir, opts.store, rnd.test_split, opts.batch_size, opts.device)}
        done.write_text(json.dumps(res, indent=1) + "\n")
        results.append(res)
        print(f"{rnd.name}: top-1 {100 * res['top1']:.1f} % on {res['clips']} clips of "
              f"{rnd.test_split}", flush=True)
    report = summarise(name, opts, results)
    write_report(out, report)
    return report


def summarise(name: str, opts: ProtocolOptions, results: list[dict[str, Any]]
              ) -> dict[str, Any]:
    top1 = np.array([r["top1"] for r in results])
    per_seed = {}
    for s in opts.seeds:
        vals = [r["top1"] for r in results if r["seed"] == s]
        per_seed[str(s)] = {"mean": float(np.mean(vals)), "std": _std(vals)}
    return {"protocol": name, "store": opts.store, "recipe": opts.recipe, "init": opts.init,
            "seeds": list(opts.seeds), "overrides": list(opts.overrides), "rounds": results,
            "top1_mean": float(top1.mean()), "top1_std": _std(top1), "per_seed": per_seed,
            "std_note": "sample standard deviation (ddof=1) over the rounds"}


def _std(values: Any) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# {report['protocol']}: top-1 {100 * report['top1_mean']:.2f} ± "
             f"{100 * report['top1_std']:.2f} %", "",
             f"store `{report['store']}`, recipe `{report['recipe']}`, init "
             f"`{report['init']}`, seeds {report['seeds']}", "",
             "| round | train splits | test split | clips | top-1 % |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['round']} | {r['train_split']} | {r['split']} | {r['clips']} | "
              f"{100 * r['top1']:.1f} |" for r in report["rounds"]]
    lines += ["", f"mean {100 * report['top1_mean']:.2f} %, std {100 * report['top1_std']:.2f}"
              f" % ({report['std_note']})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("protocol", help="fine-tune + score: esc50-5fold, spc, holdout")
    names = p.add_subparsers(dest="name", required=True)
    for name, text in (("esc50-5fold", "ESC-50 5-fold cross-validation (splits fold1..5)"),
                       ("spc", "Speech Commands: fine-tune on train, top-1 on test"),
                       ("holdout", "one train split, one scored split")):
        q = names.add_parser(name, help=text, description=text)
        q.add_argument("--store", required=True)
        q.add_argument("--out", required=True, help="protocol directory (resumes)")
        q.add_argument("--recipe", default=DEFAULT_RECIPE, help="fine-tuning recipe or YAML")
        q.add_argument("--init", default="scratch", help="pre-trained CKPT / RUN, or scratch")
        q.add_argument("--seeds", type=int, nargs="+", default=[0])
        if name == "holdout":
            q.add_argument("--train-split", default="train", help="training split(s)")
            q.add_argument("--test-split", default="eval", help="scored split")
        q.add_argument("--device", default="cpu")
        q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")


def cmd_protocol(args: argparse.Namespace) -> int:
    from train.config import ConfigError
    from train.data import DataError
    from train.loop import TrainingError
    from train.stages import StageError

    opts = ProtocolOptions(store=args.store, out=args.out, recipe=args.recipe, init=args.init,
                           seeds=list(args.seeds), overrides=list(args.overrides),
                           device=args.device)
    try:
        report = run_protocol(args.name, opts, getattr(args, "train_split", "train"),
                              getattr(args, "test_split", "test"))
    except (ConfigError, DataError, StageError, TrainingError) as exc:
        raise EvalError(str(exc).splitlines()[0]) from None
    print(f"{args.name}: top-1 {100 * report['top1_mean']:.2f} ± "
          f"{100 * report['top1_std']:.2f} % over {len(report['rounds'])} round(s); "
          f"report: {Path(args.out) / 'report.md'}")
    return 0
