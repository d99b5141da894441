"""Shard backends behind one interface: Zarr v3 (default) and HDF5 (one .h5 per shard).

A backend writes one complete shard data file from a ShardData and reads clips back by
row. The store layer around it (index parts, commit, checksums) is backend-independent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Hook = Callable[[str], None]


@dataclass
class ShardData:
    """The ok clips of one shard, packed into arrays (row i = i-th ok clip)."""

    shard_id: int
    clip_ids: list[str]
    fbank: np.ndarray  # float16 [n, target_frames, num_mel_bins]
    frames: np.ndarray  # object [n, num_frames] of bytes (b"" = no frame)
    num_frames: np.ndarray  # int16 [n]
    waveform: np.ndarray | None  # int16 [n, clip_samples] zero-padded, or None
    audio_samples: np.ndarray  # int32 [n]
    fbank_compression: str = "none"  # StoreSpec.fbank_compression
    index_part: bytes = b""  # a copy of the shard's index part (FORMAT.md "Recovering")

    def __len__(self) -> int:
        return len(self.clip_ids)


@dataclass
class ShardRow:
    """One clip's stored arrays, as a backend returns them."""

    fbank: np.ndarray  # float16 [target_frames, num_mel_bins] (writable)
    frames: list[bytes]  # all num_frames slots, b"" where no frame
    waveform: np.ndarray | None  # int16 [clip_samples] or None


class ShardReader(Protocol):
    clip_ids: list[str]
    num_frames: np.ndarray

    def read(self, rows: Sequence[int]) -> list[ShardRow]: ...

    def close(self) -> None: ...


class Backend(Protocol):
    suffix: str

    def write(self, fs: Any, path: str, data: ShardData, hook: Hook) -> None: ...

    def open(self, fs: Any, path: str, spec: Any) -> ShardReader: ...


def checked_rows(rows: Sequence[int], n: int, path: str) -> list[int]:
    """``rows`` as ints, after checking each is a row of a shard with ``n`` clips."""
    rows = [int(r) for r in rows]
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        from store.errors import StoreError

        raise StoreError(f"shard {path} has {n} rows; asked for {bad[:5]}; the index does "
                         "not match the shard, run `pipeline verify STORE`")
    return rows


def get_backend(name: str) -> Backend:
    if name == "zarr":
        from store.backends.zarr_backend import ZarrBackend

        return ZarrBackend()
    if name == "hdf5":
        from store.backends.hdf5_backend import HDF5Backend

        return HDF5Backend()
    from store.errors import StoreError

    raise StoreError(f"unknown store backend {name!r}; use 'zarr' or 'hdf5'")
