"""The one exception type the store raises for bad input (files, versions, ids)."""

from __future__ import annotations


class StoreError(Exception):
    """A store, shard, index part or clip id is unusable.

    The message always names the file (or clip) at fault and what to do about it.
    """
