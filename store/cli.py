"""`pipeline info STORE` and `pipeline verify STORE` (registered by pipeline/cli.py).

Usage from the pipeline CLI::

    sub = parser.add_subparsers(dest="command")
    store.cli.add_commands(sub)
    args = parser.parse_args(); return args.func(args)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from store.errors import StoreError
from store.info import format_info, store_info
from store.recover import recover_parts
from store.verify import verify_store


def cmd_info(args: argparse.Namespace) -> int:
    try:
        info = store_info(args.store)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2, default=str) if args.json else format_info(info))
    return 1 if info["problems"] else 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.recover_index:
        try:
            for line in recover_parts(args.store):
                print(f"recover  {line}")
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    report = verify_store(args.store, fix=args.fix, grace_seconds=args.grace_seconds,
                          progress=not args.quiet)
    print(report.summary())
    return 0 if report.ok else 1


def add_commands(subparsers: Any) -> None:
    """Register `info` and `verify`; each sets ``func`` to a handler returning an exit code."""
    p = subparsers.add_parser("info", help="summarise a store (counts, size, stats, schema)")
    p.add_argument("store", help="store directory or URL")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=cmd_info)
    p = subparsers.add_parser("verify", help="re-check every checksum and index<->shard link")
    p.add_argument("store", help="store directory or URL")
    p.add_argument("--fix", action="store_true",
                   help="delete orphan data files (left by killed writers, or replaced by "
                        "a re-run) older than --grace-seconds; never a data file whose "
                        "index part is damaged")
    p.add_argument("--grace-seconds", type=float, default=3600.0,
                   help="with --fix, keep orphans younger than this (writers may be running)")
    p.add_argument("--recover-index", action="store_true",
                   help="first restore damaged index parts from the copy their data file "
                        "carries, then verify")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)


def main(argv: list[str] | None = None) -> int:
    from store.arrow_without_pandas import skip_pyarrow_pandas_probe

    skip_pyarrow_pandas_probe()  # pyarrow's pandas import: 1-4 s, never needed here
    parser = argparse.ArgumentParser(prog="python -m store.cli")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
