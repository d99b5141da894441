"""`evaluate` console script. Inference and metrics arrive with the eval issue."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate", description="10-clip inference and metrics")
    parser.add_argument("checkpoint", nargs="?", help="fine-tuned checkpoint (not implemented yet)")
    parser.parse_args(argv)
    print("evaluate: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
