"""`train` console script. Training runs arrive with the trainer issue."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train", description="MAViL / peer-model training")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a training stage (not implemented yet)")
    run.add_argument("stage", help="stage1 | stage2 | finetune")
    args = parser.parse_args(argv)
    print(f"train {args.command}: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
