"""HDF5 shards: one .h5 file per shard (for Lustre/GPFS, where many small files hurt).

Datasets (store/FORMAT.md has the full description):
  clip_id       vlen str [n]
  num_frames    int16 [n]
  audio_samples int32 [n]
  fbank         float16 [n, T, M], chunks [1, T, M], no filter (shuffle + lzf if lossless)
  frame_offsets int64 [n, F + 1]: slot j of clip i = frame_bytes[off[i, j]:off[i, j + 1]]
  frame_bytes   uint8 [total], contiguous: all JPEG files of the shard back to back
  waveform      int16 [n, S], chunks [1, S] (optional)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from store.backends import Hook, ShardData, ShardRow, checked_rows
from store.backends.fs import is_local, write_then_rename
from store.errors import StoreError, rebuild_hint


class HDF5Backend:
    suffix = ".h5"

    def write(self, fs: Any, path: str, data: ShardData, hook: Hook) -> None:
        """Write the whole file under a temp name; rename (or upload) when complete."""
        if is_local(fs):
            write_then_rename(path, lambda tmp: _write_file(tmp, data, hook))
        else:
            with tempfile.TemporaryDirectory() as tmpdir:
                local = os.path.join(tmpdir, "shard.h5")
                _write_file(local, data, hook)
                fs.put_file(local, path)

    def open(self, fs: Any, path: str, spec: Any) -> HDF5ShardReader:
        return HDF5ShardReader(fs, path)


def _write_file(path: str, data: ShardData, hook: Hook) -> None:
    import h5py

    n = len(data)
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["shard_id"] = data.shard_id
        f.attrs["num_clips"] = n
        f.create_dataset("clip_id", data=np.array(data.clip_ids, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("num_frames", data=data.num_frames.astype("<i2"))
        f.create_dataset("audio_samples", data=data.audio_samples.astype("<i4"))
        lossless = {"compression": "lzf", "shuffle": True}  # HDF5 built-ins: plain h5py reads
        f.create_dataset("fbank", data=data.fbank, dtype="<f2",
                         chunks=(1, *data.fbank.shape[1:]),
                         **(lossless if data.fbank_compression == "lossless" else {}))
        f.flush()
        hook("data")  # tests kill the writer here: half a shard is on disk
        lengths = np.array([[len(b) for b in row] for row in data.frames],
                           dtype=np.int64).reshape(n, -1)
        offsets = np.zeros((n, lengths.shape[1] + 1), dtype=np.int64)
        offsets[:, 1:] = np.cumsum(lengths, axis=1)
        offsets += np.concatenate([[0], np.cumsum(lengths.sum(axis=1))[:-1]])[:, None]
        blob = b"".join(b for row in data.frames for b in row)
        f.create_dataset("frame_offsets", data=offsets)
        f.create_dataset("frame_bytes", data=np.frombuffer(blob, dtype=np.uint8))
        if data.waveform is not None:
            f.create_dataset("waveform", data=data.waveform, dtype="<i2",
                             chunks=(1, data.waveform.shape[1]))
        if data.index_part:
            f.create_dataset("index_part", data=np.frombuffer(data.index_part, np.uint8))
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def read_index_copy(fs: Any, path: str) -> bytes:
    """The copy of its index part a shard file carries (b"" if it has none)."""
    import h5py

    with fs.open(path, "rb") as raw, h5py.File(raw, "r") as f:
        return f["index_part"][:].tobytes() if "index_part" in f else b""


class HDF5ShardReader:
    """Reads clips from one open .h5 shard file."""

    def __init__(self, fs: Any, path: str) -> None:
        import h5py

        self.path = path
        self._fobj = None
        try:
            if is_local(fs):
                self._file = h5py.File(path, "r", locking=False)
            else:
                self._fobj = fs.open(path, "rb")
                self._file = h5py.File(self._fobj, "r")
            f = self._file
            self._fbank, self._bytes = f["fbank"], f["frame_bytes"]
            self._offsets = np.asarray(f["frame_offsets"][:], dtype=np.int64)
            self._waveform = f["waveform"] if "waveform" in f else None
            self._raw_fbank = self._fbank.compression is None and not self._fbank.scaleoffset \
                and self._fbank.chunks == (1, *self._fbank.shape[1:])
            self.n = int(self._fbank.shape[0])
        except FileNotFoundError as exc:
            raise StoreError(f"shard file {path} is missing; {rebuild_hint(path)}") from exc
        except (OSError, KeyError, RuntimeError, ValueError) as exc:
            raise StoreError(f"shard file {path} is unreadable or incomplete ({exc}); "
                             f"{rebuild_hint(path)}") from exc
        self.has_waveform = self._waveform is not None

    @property
    def clip_ids(self) -> list[str]:
        return [c.decode() if isinstance(c, bytes) else str(c) for c in self._file["clip_id"][:]]

    @property
    def num_frames(self) -> np.ndarray:
        return np.asarray(self._file["num_frames"][:], dtype=np.int64)

    def read(self, rows: Sequence[int]) -> list[ShardRow]:
        rows = checked_rows(rows, self.n, self.path)
        try:
            return [self._read_one(r) for r in rows]
        except (OSError, ValueError) as exc:
            raise StoreError(f"shard file {self.path}: read failed ({exc}); the file is "
                             f"corrupt; {rebuild_hint(self.path)}") from exc

    def _read_one(self, r: int) -> ShardRow:
        shape = self._fbank.shape[1:]
        if self._raw_fbank:  # one chunk = one clip, no filter: skip the type conversion
            _, raw = self._fbank.id.read_direct_chunk((r, 0, 0))
            if len(raw) != 2 * int(np.prod(shape)):
                raise ValueError(f"fbank chunk {r} has {len(raw)} bytes")
            fbank = np.frombuffer(bytearray(raw), dtype="<f2").reshape(shape)
        else:
            fbank = self._fbank[r]
        off = self._offsets[r]
        blob = self._bytes[off[0]:off[-1]].tobytes() if off[-1] > off[0] else b""
        rel = off - off[0]
        frames = [blob[rel[j]:rel[j + 1]] for j in range(len(rel) - 1)]
        wav = self._waveform[r] if self._waveform is not None else None
        return ShardRow(fbank, frames, wav)

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            if self._fobj is not None:
                self._fobj.close()


