"""`evaluate` console script: run (1-/10-clip inference + metrics), retrieval, compare, bench.

    evaluate run --ckpt FT_CKPT --store S --out DIR [--split eval] [--clips 10|1] [--batch-size B]
    evaluate retrieval --ckpt PT_CKPT --store S --out DIR [--per-class 5] [--direction both]
    evaluate compare DIR1 DIR2 ... --out REPORT_DIR
    evaluate bench --store S [--size tiny] [--clips-per-run 8]
    evaluate protocol esc50-5fold|spc|holdout --store S --out DIR [--init CKPT|scratch]

Bad input (a pre-training checkpoint given to `run`, a store whose vocabulary is not the
head's, an empty split, ...) ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import math
import sys
from pathlib import Path
from typing import Any

from eval.checks import EvalError


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="score a split of a store with a fine-tuned checkpoint")
    p.add_argument("--ckpt", required=True, help="fine-tuned checkpoint file or RUN dir")
    p.add_argument("--store", required=True, help="feature store path or URL")
    p.add_argument("--out", required=True, help="output directory (resumes if it exists)")
    p.add_argument("--split", default="eval")
    p.add_argument("--clips", type=int, default=10, choices=(1, 10),
                   help="video views per clip (MAViL supp. B.3: 10)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per batch")
    p.add_argument("--missing", default="zero", choices=("zero", "skip"),
                   help="clips lacking a modality the model takes: zero-filled or skipped")
    p.add_argument("--part-size", type=int, default=256, help="clips per resumable part")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if present, else cpu")
    p.add_argument("--fresh", action="store_true", help="discard parts of an earlier run")
    p.add_argument("--no-report", action="store_true", help="skip report.md / plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_retrieval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrieval", help="audio<->video retrieval with pre-trained encoders")
    p.add_argument("--ckpt", required=True, help="pre-training checkpoint file or RUN dir")
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="eval")
    p.add_argument("--per-class", type=int, default=5, help="clips drawn per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ids", default=None, help="file of clip ids (one a line) instead")
    p.add_argument("--direction", default="both", choices=("both", "a2v", "v2a"))
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="several `evaluate run` dirs on one table and plot")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--out", required=True)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="eval throughput, 1 vs 10 clips, A+V model")
    p.add_argument("--store", required=True)
    p.add_argument("--size", default="tiny", help="ViT size of the A+V model")
    p.add_argument("--split", default=None)
    p.add_argument("--clips-per-run", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--img-size", type=int, default=224, help="frame size of the model")
    p.add_argument("--device", default=None)


def cmd_run(args: argparse.Namespace) -> int:
    from eval.infer import RunOptions, dist_info, read_predictions, run_inference
    from eval.metrics import classification_metrics

    opts = RunOptions(ckpt=args.ckpt, store=args.store, out=args.out, split=args.split,
                      clips=args.clips, batch_size=args.batch_size, missing=args.missing,
                      part_size=args.part_size, num_workers=args.num_workers,
                      device=args.device, fresh=args.fresh, progress=not args.quiet)
    if opts.batch_size < 1 or opts.part_size < 1:
        raise EvalError("--batch-size and --part-size must be at least 1")
    summary = run_inference(opts)
    if dist_info()[0] != 0:
        return 0
    out = Path(args.out)
    ids, labels, scores, _ = read_predictions(out)
    m = classification_metrics(scores, labels, single_label=summary["single_label"])
    result = {k: m[k] for k in ("mAP", "mAP_with_positives", "mAUC", "d_prime", "top1", "top5")
              if k in m}
    result.update({k: v for k, v in m.items() if k not in result})
    result.update({k: summary[k] for k in summary})
    (out / "metrics.json").write_text(json.dumps(_finite(result), indent=2) + "\n")
    if summary["parts_done_before"]:
        print(f"resumed: {summary['parts_done_before']} of {summary['parts']} parts were "
              "already scored", file=sys.stderr)
    print(_summary_line(result))
    if not args.no_report:
        from eval.report import write_run_report

        write_run_report(out, store=args.store)
        print(f"report: {out / 'report.md'} (and report.html, plots/)")
    return 0


def _finite(d: Any) -> Any:
    """NaN -> None so metrics.json is strict JSON."""
    if isinstance(d, dict):
        return {k: _finite(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_finite(v) for v in d]
    if isinstance(d, float) and math.isnan(d):
        return None
    return d


def _summary_line(r: dict[str, Any]) -> str:
    def f(key: str, scale: float = 100.0) -> str:
        v = r.get(key)
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else \
            f"{v * scale:.2f}"

    parts = [f"mAP {f('mAP')}", f"mAP (classes with positives) {f('mAP_with_positives')}",
             f"mAUC {f('mAUC')}", f"d' {f('d_prime', 1.0)}"]
    if "top1" in r:
        parts += [f"top-1 {f('top1')}", f"top-5 {f('top5')}"]
    return (f"{r['clips_scored']} clips scored ({r['clips_skipped']} skipped), "
            f"{r['protocol']['clips']}-clip: " + ", ".join(parts)
            + f"; {r['classes_without_positives']} of {r['classes']} classes have no positives")


def cmd_retrieval(args: argparse.Namespace) -> int:
    from eval.retrieval import RetrievalOptions, run_retrieval

    res = run_retrieval(RetrievalOptions(
        ckpt=args.ckpt, store=args.store, out=args.out, split=args.split,
        per_class=args.per_class, seed=args.seed, ids=args.ids, direction=args.direction,
        batch_size=args.batch_size, device=args.device))
    for d in ("a2v", "v2a"):
        if d in res:
            r = res[d]
            print(f"{d}: R@1 {100 * r['R@1']:.1f}  R@5 {100 * r['R@5']:.1f}  "
                  f"R@10 {100 * r['R@10']:.1f}  median rank {r['median_rank']:.0f} "
                  f"({res['num_clips']} clips)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from eval.report import write_compare_report

    path = write_compare_report([Path(d) for d in args.dirs], Path(args.out))
    print(f"compare: {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from eval.bench import run_bench

    run_bench(args.store, size=args.size, split=args.split, n_clips=args.clips_per_run,
              batch_size=args.batch_size, repeats=args.repeats, device=args.device,
              img_size=args.img_size)
    return 0


def cmd_protocol(args: argparse.Namespace) -> int:
    from eval.protocols import cmd_protocol as run

    return run(args)


COMMANDS = {"run": cmd_run, "retrieval": cmd_retrieval, "compare": cmd_compare,
            "bench": cmd_bench, "protocol": cmd_protocol}


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the command itself: a quick exit, as pipeline.cli.main
        atexit.register(gc.freeze)
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from eval.protocols import add_parser as _add_protocol

    for add in (_add_run, _add_retrieval, _add_compare, _add_bench, _add_protocol):
        add(sub)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EvalError as exc:
        print(f"evaluate {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
