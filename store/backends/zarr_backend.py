"""Zarr v3 shards: one group per shard, one sharded file per array, one clip per chunk.

Layout (store/FORMAT.md has the byte-level description):
  shards/NNNNNN-<token>.zarr/
    clip_id       vlen-utf8 [n]
    num_frames    int16 [n]
    audio_samples int32 [n]
    fbank         float16 [n, T, M]  sharding_indexed, inner chunk [1, T, M], raw bytes
                                     (or blosc lz4hc + byte shuffle: fbank_compression)
    frames        vlen-bytes [n, F]  sharding_indexed, inner chunk [1, F] (JPEG bytes)
    waveform      int16 [n, S]       sharding_indexed, inner chunk [1, S] (optional)

Writing uses zarr itself. Reading uses a direct path by default (zarr_direct.py): the
shard index at the end of each array file is parsed once per open shard, then each clip
is one positioned read (zarr's sync-over-async API costs ~1.5 ms per array read; see
FORMAT.md, "Performance"). The direct path checks zarr.json first and falls back to zarr
whenever the codecs are not exactly the ones it knows.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from store.backends import Hook, ShardData, ShardRow, checked_rows
from store.backends.fs import is_local, write_then_rename
from store.backends.ranges import fetch_chunks
from store.backends.zarr_direct import (
    BLOSC,
    ShardFile,
    decode_vlen,
    direct_readable,
)
from store.errors import StoreError, rebuild_hint

ENGINES = ("auto", "direct", "zarr")
_FULL = {"write_empty_chunks": True}  # every clip has its chunk: a missing file is damage


def _zarr() -> Any:
    import zarr

    warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")
    return zarr


class ZarrBackend:
    suffix = ".zarr"

    def __init__(self, engine: str = "auto") -> None:
        if engine not in ENGINES:
            raise StoreError(f"unknown zarr read engine {engine!r}; use one of {ENGINES}")
        self.engine = engine

    def write(self, fs: Any, path: str, data: ShardData, hook: Hook) -> None:
        """Write the whole shard group; locally under a temp name, renamed when complete."""
        if is_local(fs):
            write_then_rename(path, lambda tmp: _write_group(tmp, data, hook))
        else:  # unique name, invisible to readers until the index part names it
            _write_group(fs.unstrip_protocol(path), data, hook)

    def open(self, fs: Any, path: str, spec: Any) -> ZarrShardReader:
        return ZarrShardReader(fs, path, self.engine)


def _write_group(target: str, data: ShardData, hook: Hook) -> None:
    zarr = _zarr()
    n = len(data)
    group = zarr.open_group(target, mode="w", zarr_format=3)
    group.attrs.update({"shard_id": data.shard_id, "num_clips": n})
    small = {"clip_id": np.array(data.clip_ids, dtype=object),
             "num_frames": data.num_frames.astype("<i2"),
             "audio_samples": data.audio_samples.astype("<i4")}
    for name, values in small.items():
        dtype = str if name == "clip_id" else values.dtype
        arr = group.create_array(name, shape=(n,), dtype=dtype, chunks=(n,),
                                 compressors=None, fill_value="" if dtype is str else 0)
        arr[:] = values
    fbank = data.fbank
    compressors = None
    if data.fbank_compression == "lossless":
        compressors = zarr.codecs.BloscCodec(**BLOSC["configuration"])
    arr = group.create_array("fbank", shape=fbank.shape, dtype="float16", shards=fbank.shape,
                             chunks=(1, *fbank.shape[1:]), compressors=compressors,
                             fill_value=0, config=_FULL)
    arr[:] = fbank
    hook("data")  # tests kill the writer here: half a shard is on disk
    arr = group.create_array("frames", shape=data.frames.shape,
                             dtype=zarr.dtype.VariableLengthBytes(),
                             shards=data.frames.shape, chunks=(1, data.frames.shape[1]),
                             compressors=None, fill_value=b"", config=_FULL)
    arr[:] = data.frames
    if data.waveform is not None:
        wav = data.waveform
        arr = group.create_array("waveform", shape=wav.shape, dtype="int16", shards=wav.shape,
                                 chunks=(1, wav.shape[1]), compressors=None, fill_value=0,
                                 config=_FULL)
        arr[:] = wav
    if data.index_part:
        copy = np.frombuffer(data.index_part, dtype=np.uint8)
        arr = group.create_array("index_part", shape=copy.shape, dtype="uint8",
                                 chunks=copy.shape, compressors=None, fill_value=0)
        arr[:] = copy


def read_index_copy(fs: Any, path: str) -> bytes:
    """The copy of its index part a shard group carries (b"" if it has none)."""
    zarr = _zarr()
    group = zarr.open_group(fs.unstrip_protocol(path) if not is_local(fs) else path,
                            mode="r")
    if "index_part" not in group:
        return b""
    return np.asarray(group["index_part"][:], dtype=np.uint8).tobytes()


class ZarrShardReader:
    """Reads clips of one shard group; holds its metadata and open files."""

    def __init__(self, fs: Any, path: str, engine: str = "auto") -> None:
        self.fs, self.path = fs, path
        try:
            meta = {name: self._array_meta(name) for name in ("clip_id", "num_frames",
                                                             "fbank", "frames")}
            if self.fs.exists(f"{path}/waveform/zarr.json"):
                meta["waveform"] = self._array_meta("waveform")
            self.n = int(meta["fbank"]["shape"][0])
            direct_ok = all(direct_readable(m) for k, m in meta.items()
                            if k in ("fbank", "frames", "waveform"))
        except FileNotFoundError as exc:
            raise StoreError(f"shard {path} is missing or incomplete ({exc}); "
                             f"{rebuild_hint(path)}") from exc
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise StoreError(f"shard {path}: zarr.json metadata is corrupt ({exc}); "
                             f"{rebuild_hint(path)}") from exc
        self.has_waveform = "waveform" in meta
        if engine == "direct" and not direct_ok:
            raise StoreError(f"shard {path} uses codecs the direct reader does not know; "
                             "open the store with engine='zarr'")
        self.direct = direct_ok and engine != "zarr"
        self._meta = meta
        self._group = None
        self._files: dict[str, ShardFile] = {}
        self._small: dict[str, Any] = {}
        if not self.direct:
            try:
                group = self._zarr_group()
                self._arrays = {k: group[k] for k in meta}
            except Exception as exc:  # zarr raises many types for damaged metadata
                raise StoreError(f"shard {path} is unreadable by zarr ({exc}); "
                                 f"{rebuild_hint(path)}") from exc

    @property
    def clip_ids(self) -> list[str]:
        return [str(c) for c in self._small_array("clip_id")]

    @property
    def num_frames(self) -> np.ndarray:
        return np.asarray(self._small_array("num_frames"), dtype=np.int64)

    def _small_array(self, name: str) -> Any:
        if name not in self._small:
            try:
                self._small[name] = self._zarr_group()[name][:]
            except Exception as exc:  # zarr raises many types for damaged data
                raise StoreError(f"shard {self.path}: array {name} is unreadable ({exc}); "
                                 f"{rebuild_hint(self.path)}") from exc
        return self._small[name]

    def _array_meta(self, name: str) -> dict[str, Any]:
        with self.fs.open(f"{self.path}/{name}/zarr.json", "rb") as f:
            return json.loads(f.read())

    def _zarr_group(self) -> Any:
        if self._group is None:
            zarr = _zarr()
            target = self.path if is_local(self.fs) else self.fs.unstrip_protocol(self.path)
            self._group = zarr.open_group(target, mode="r", zarr_format=3)
        return self._group

    def _file(self, name: str) -> ShardFile:
        f = self._files.get(name)
        if f is None:
            meta = self._meta[name]
            inner = meta["codecs"][0]["configuration"]["chunk_shape"]
            key = "/".join(["c"] + ["0"] * len(inner))
            blosc = meta["codecs"][0]["configuration"]["codecs"][1:] == [BLOSC]
            f = ShardFile(self.fs, f"{self.path}/{name}/{key}", self.n, blosc)
            self._files[name] = f
        return f

    def read(self, rows: Sequence[int]) -> list[ShardRow]:
        rows = checked_rows(rows, self.n, self.path)
        if self.direct:
            return self._read_direct(rows)
        return self._read_zarr(rows)

    def _read_direct(self, rows: list[int]) -> list[ShardRow]:
        fb_meta = self._meta["fbank"]
        fb_shape = tuple(fb_meta["shape"][1:])
        wav_len = self._meta["waveform"]["shape"][1] if self.has_waveform else 0
        fbank_f, frames_f = self._file("fbank"), self._file("frames")
        wav_f = self._file("waveform") if self.has_waveform else None
        n_slots = int(self._meta["frames"]["shape"][1])
        if not is_local(self.fs):  # one round of concurrent range GETs for all chunks
            fetch_chunks(self.fs, self.remote_chunks(rows))
        elif len(rows) > 1:  # one read per run of adjacent chunks, per array
            for f in (fbank_f, frames_f, wav_f):
                if f is not None:
                    f.prefetch(rows)
        out = []
        for r in rows:
            fbank = fbank_f.read_array(r, np.dtype("<f2"), fb_shape)
            raw = frames_f.read_chunk(r)
            frames = decode_vlen(raw, n_slots, self.path) if raw is not None else \
                [b""] * n_slots
            wav = wav_f.read_array(r, np.dtype("<i2"), (wav_len,)) if wav_f else None
            out.append(ShardRow(fbank, frames, wav))
        for f in (fbank_f, frames_f, wav_f):
            if f is not None:
                f.cached.clear()
        return out

    def remote_chunks(self, rows: Sequence[int]) -> list[tuple[ShardFile, list[int]]]:
        """(array file, rows) a direct read of ``rows`` needs, for a caller that fetches
        several shards' chunks in one round (``ranges.fetch_chunks``); [] when this
        shard is read through the zarr library."""
        if not self.direct:
            return []
        rows = checked_rows(rows, self.n, self.path)
        names = ["fbank", "frames"] + (["waveform"] if self.has_waveform else [])
        return [(self._file(name), rows) for name in names]

    def _read_zarr(self, rows: list[int]) -> list[ShardRow]:
        a = self._arrays
        order = sorted(set(rows))
        fbank = a["fbank"].oindex[order] if len(order) > 1 else a["fbank"][order[0]][None]
        frames = a["frames"].oindex[order] if len(order) > 1 else a["frames"][order[0]][None]
        wav = None
        if self.has_waveform:
            wav = a["waveform"].oindex[order] if len(order) > 1 else \
                a["waveform"][order[0]][None]
        pos = {r: i for i, r in enumerate(order)}
        return [ShardRow(np.array(fbank[pos[r]]), [bytes(b) for b in frames[pos[r]]],
                         None if wav is None else np.array(wav[pos[r]])) for r in rows]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._group = None
