"""The one exception type the store raises for bad input, and the advice it gives."""

from __future__ import annotations

import re

_SHARD_IN_PATH = re.compile(r"(?:^|/)shards/(\d+)-[0-9a-f]+\.(?:zarr|h5)(?:/|$)")


class StoreError(Exception):
    """A store, shard, index part or clip id is unusable.

    The message always names the file (or clip) at fault and what to do about it.
    """


class StoreConflict(StoreError):
    """Another build (another manifest) is writing, or has written, this store."""


def rebuild_hint(where: int | str | None = None) -> str:
    """How to rebuild a damaged shard: drop its commit record, let the build resume redo it.

    ``where``: a shard id, or a path that contains ``shards/NNNNNN-<token>.(zarr|h5)`` or
    ``index/NNNNNN.parquet``; without one the advice names the part generically.
    """
    shard = where if isinstance(where, int) else None
    if isinstance(where, str):
        m = _SHARD_IN_PATH.search(where) or re.search(r"(?:^|/)index/(\d+)\.parquet$", where)
        shard = int(m.group(1)) if m else None
    part = "its index part index/NNNNNN.parquet" if shard is None else \
        f"index/{shard:06d}.parquet"
    return (f"delete {part} and run the same `pipeline build...` command again (a build "
            "resumes by redoing every shard that has no index part)")
