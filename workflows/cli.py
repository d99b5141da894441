"""``python -m workflows``: run a workflow file here, or submit it to a Ray cluster.

    python -m workflows run FILE [--set KEY=VALUE ...] [--address http://HEAD:8265]
    python -m workflows status FILE [--set KEY=VALUE ...]   # the run log, nothing run
    python -m workflows plan FILE [--set KEY=VALUE ...]     # each step's command, and done?
    python -m workflows merge-manifests A.csv B.csv --out C.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from workflows.spec import WorkflowError, load_workflow, parse_sets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workflows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_file(p: argparse.ArgumentParser) -> None:
        p.add_argument("file", help="workflow YAML (e.g. workflows/demo.yaml)")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="set a parameter for this run (repeatable)")

    p = sub.add_parser("run", help="run the steps not yet done, in order")
    with_file(p)
    p.add_argument("--address", help="submit the whole run to this Ray cluster "
                   "(dashboard URL, e.g. http://127.0.0.1:8265) through the Ray Jobs API")
    p.add_argument("--no-wait", action="store_true", help="with --address: submit and return")
    p.add_argument("--entrypoint-gpus", type=float, default=None,
                   help="with --address: GPUs reserved for the runner and its torchrun steps")
    p.add_argument("--entrypoint-cpus", type=float, default=None)
    p.add_argument("--python", default="python", help="with --address: the cluster's python")
    p.add_argument("--submission-id", help="with --address: the Ray job's id")
    p.add_argument("--quiet", action="store_true", help="progress lines only, no command output")
    p.add_argument("--until", metavar="STEP", help="stop after this step (e.g. the store only)")
    p.add_argument("--lock-wait", type=float, default=60.0,
                   help="seconds to wait for another runner on the same workdir")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="print the run log of a workflow's last run")
    with_file(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("plan", help="print each step's command and whether it is done")
    with_file(p)
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("merge-manifests", help="concatenate generic manifests (CSV), "
                       "local uris made absolute")
    p.add_argument("manifests", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_merge)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    wf = load_workflow(args.file, parse_sets(args.sets))  # validate here, before submitting
    if args.address:
        from workflows.submit import check_workdir, submit

        if args.until:
            raise ValueError("--until is for a run here, not with --address")
        raw = parse_sets(args.sets).get("workdir", wf.params["workdir"])
        check_workdir(str(raw))
        return submit(args.address, args.file, args.sets, wait=not args.no_wait,
                      python=args.python, num_gpus=args.entrypoint_gpus,
                      num_cpus=args.entrypoint_cpus, submission_id=args.submission_id)
    from workflows.runner import Runner

    def echo(line: str) -> None:
        print(line, flush=True)

    return Runner(wf, echo=echo, stream_output=not args.quiet, lock_wait_s=args.lock_wait,
                  until=args.until).run()


def cmd_status(args: argparse.Namespace) -> int:
    from workflows.runner import Runner

    wf = load_workflow(args.file, parse_sets(args.sets))
    runner = Runner(wf)
    runner.load_state()
    state = runner.state
    if args.json:
        print(json.dumps(state, indent=1, default=str))
        return 0
    print(f"workflow {wf.name}: {state.get('status', 'never run')} "
          f"(run log {runner.dir / 'state.json'})")
    for step in wf.steps:
        e = state["steps"].get(step.name, {})
        secs = f"{e['seconds']:.1f} s" if isinstance(e.get("seconds"), float | int) else ""
        print(f"  {step.name:<24} {e.get('status', '-'):<8} {secs:>10}  "
              f"{e.get('error', '') or '; '.join(o['detail'] for o in e.get('outputs', []))}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from workflows.runner import plan

    wf = load_workflow(args.file, parse_sets(args.sets))
    for step, argv, done in plan(wf):
        print(f"{'done' if done else 'todo'}  {step.name}: {' '.join(argv)}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from workflows.manifests import merge_manifests

    n = merge_manifests(args.manifests, args.out)
    print(f"{args.out}: {n} rows from {len(args.manifests)} manifests")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (WorkflowError, OSError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"error: {err} (install the ray extra for --address)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
