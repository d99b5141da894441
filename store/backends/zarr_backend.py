"""Zarr v3 shards: one group per shard, one sharded file per array, one clip per chunk.

Layout (store/FORMAT.md has the byte-level description):
  shards/NNNNNN-<token>.zarr/
    clip_id       vlen-utf8 [n]
    num_frames    int16 [n]
    audio_samples int32 [n]
    fbank         float16 [n, T, M]  sharding_indexed, inner chunk [1, T, M], raw bytes
    frames        vlen-bytes [n, F]  sharding_indexed, inner chunk [1, F] (JPEG bytes)
    waveform      int16 [n, S]       sharding_indexed, inner chunk [1, S] (optional)

Writing uses zarr itself. Reading uses a direct path by default: the shard index at the
end of each array file is parsed once per open shard, then each clip is one positioned
read (zarr's sync-over-async API costs ~1.5 ms per array read; see FORMAT.md,
"Performance"). The direct path checks zarr.json first and falls back to zarr whenever
the codecs are not exactly the ones it knows.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from store.backends import Hook, ShardData, ShardRow
from store.backends.fs import fsync_dir, is_local, token
from store.errors import StoreError

ENGINES = ("auto", "direct", "zarr")
_NO_CHUNK = 2**64 - 1
_BYTES_LE = {"name": "bytes", "configuration": {"endian": "little"}}
_INDEX_CODECS = [_BYTES_LE, {"name": "crc32c"}]
_FULL = {"write_empty_chunks": True}  # every clip has its chunk: a missing file is damage


def _zarr():
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
            parent, name = os.path.split(path)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".tmp-{token()}-{name}")
            try:
                _write_group(tmp, data, hook)
                os.rename(tmp, path)
            finally:
                if os.path.exists(tmp):
                    shutil.rmtree(tmp)
            fsync_dir(parent)
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
    arr = group.create_array("fbank", shape=fbank.shape, dtype="float16", shards=fbank.shape,
                             chunks=(1, *fbank.shape[1:]), compressors=None, fill_value=0,
                             config=_FULL)
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
            direct_ok = all(_direct_readable(m) for k, m in meta.items()
                            if k in ("fbank", "frames", "waveform"))
        except FileNotFoundError as exc:
            raise StoreError(f"shard {path} is missing or incomplete ({exc}); run "
                             "`pipeline verify` and re-run the shard") from exc
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise StoreError(f"shard {path}: zarr.json metadata is corrupt ({exc}); re-run "
                             "the shard") from exc
        self.has_waveform = "waveform" in meta
        if engine == "direct" and not direct_ok:
            raise StoreError(f"shard {path} uses codecs the direct reader does not know; "
                             "open the store with engine='zarr'")
        self.direct = direct_ok and engine != "zarr"
        self._meta = meta
        self._group = None
        self._files: dict[str, _ShardFile] = {}
        self._small: dict[str, Any] = {}
        if not self.direct:
            try:
                group = self._zarr_group()
                self._arrays = {k: group[k] for k in meta}
            except Exception as exc:  # zarr raises many types for damaged metadata
                raise StoreError(f"shard {path} is unreadable by zarr ({exc}); re-run the "
                                 "shard") from exc

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
                                 "re-run the shard") from exc
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

    def _file(self, name: str) -> _ShardFile:
        f = self._files.get(name)
        if f is None:
            meta = self._meta[name]
            inner = meta["codecs"][0]["configuration"]["chunk_shape"]
            key = "/".join(["c"] + ["0"] * len(inner))
            f = _ShardFile(self.fs, f"{self.path}/{name}/{key}", self.n)
            self._files[name] = f
        return f

    def read(self, rows: Sequence[int]) -> list[ShardRow]:
        rows = [int(r) for r in rows]
        bad = [r for r in rows if not 0 <= r < self.n]
        if bad:
            raise StoreError(f"shard {self.path} has {self.n} rows; asked for {bad[:5]}; "
                             "the index does not match the shard, run `pipeline verify`")
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
        if len(rows) > 1:  # one read per run of adjacent chunks, per array
            for f in (fbank_f, frames_f, wav_f):
                if f is not None:
                    f.prefetch(rows)
        out = []
        for r in rows:
            fbank = fbank_f.read_array(r, np.dtype("<f2"), fb_shape)
            raw = frames_f.read_chunk(r)
            frames = _decode_vlen(raw, n_slots, self.path) if raw is not None else \
                [b""] * n_slots
            wav = wav_f.read_array(r, np.dtype("<i2"), (wav_len,)) if wav_f else None
            out.append(ShardRow(fbank, frames, wav))
        for f in (fbank_f, frames_f, wav_f):
            if f is not None:
                f.cached.clear()
        return out

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


def _direct_readable(meta: dict[str, Any]) -> bool:
    """True when an array is exactly one shard of raw or vlen-bytes inner chunks."""
    codecs = meta.get("codecs", [])
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return False
    if meta.get("chunk_key_encoding") != {"name": "default",
                                          "configuration": {"separator": "/"}}:
        return False
    if meta["chunk_grid"]["configuration"]["chunk_shape"] != meta["shape"]:
        return False
    conf = codecs[0]["configuration"]
    inner = conf["chunk_shape"]
    if inner[0] != 1 or list(inner[1:]) != list(meta["shape"][1:]):
        return False
    if conf.get("index_codecs") != _INDEX_CODECS or conf.get("index_location") != "end":
        return False
    if meta["data_type"] == "variable_length_bytes":
        return conf["codecs"] == [{"name": "vlen-bytes", "configuration": {}}]
    return meta["data_type"] in ("float16", "int16") and conf["codecs"] == [_BYTES_LE]


class _ShardFile:
    """One sharded array file: its chunk index (read once), then one read per chunk."""

    def __init__(self, fs: Any, path: str, n_chunks: int) -> None:
        self.path, self.fs = path, fs
        self._fd: int | None = None
        self._remote = None
        self.cached: dict[int, memoryview] = {}
        try:
            if is_local(fs):
                self._fd = os.open(path, os.O_RDONLY)
                size = os.fstat(self._fd).st_size
            else:
                self._remote = fs.open(path, "rb")
                size = fs.size(path)
        except FileNotFoundError as exc:
            raise StoreError(f"shard file {path} is missing; run `pipeline verify` and "
                             "re-run the shard") from exc
        index_len = 16 * n_chunks + 4
        if size < index_len:
            raise StoreError(f"shard file {path} is truncated ({size} bytes); re-run the shard")
        raw = self._pread(size - index_len, index_len)
        import google_crc32c

        if np.uint32(google_crc32c.value(raw[:-4])).tobytes() != raw[-4:]:
            raise StoreError(f"shard file {path}: chunk index checksum mismatch (corrupt); "
                             "re-run the shard")
        self.index = np.frombuffer(raw[:-4], dtype="<u8").reshape(n_chunks, 2)
        ends = self.index[:, 0] + self.index[:, 1]
        present = self.index[:, 0] != _NO_CHUNK
        if np.any(ends[present] > size - index_len):
            raise StoreError(f"shard file {path}: chunk index points past the data "
                             "(truncated or corrupt); re-run the shard")

    def _pread(self, offset: int, nbytes: int, out: Any = None) -> Any:
        if self._fd is not None:
            if out is not None:
                got = os.preadv(self._fd, [out], offset)
                return out if got == nbytes else out[:got]
            return os.pread(self._fd, nbytes, offset)
        assert self._remote is not None
        self._remote.seek(offset)
        data = self._remote.read(nbytes)
        if out is None:
            return data
        out[: len(data)] = data
        return out if len(data) == nbytes else out[: len(data)]

    def prefetch(self, rows: Sequence[int]) -> None:
        """Read runs of chunks that lie back to back in the file with one read each."""
        present = sorted({r for r in rows if self.index[r, 0] != _NO_CHUNK},
                         key=lambda r: int(self.index[r, 0]))
        run: list[int] = []
        for r in [*present, None]:
            if r is not None and run:
                prev = run[-1]
                if int(self.index[r, 0]) == int(self.index[prev, 0] + self.index[prev, 1]):
                    run.append(r)
                    continue
            if len(run) > 1:
                start = int(self.index[run[0], 0])
                size = int(self.index[run[-1], 0] + self.index[run[-1], 1]) - start
                buf = memoryview(bytearray(size))
                if len(self._pread(start, size, buf)) == size:
                    for q in run:
                        o = int(self.index[q, 0]) - start
                        self.cached[q] = buf[o:o + int(self.index[q, 1])]
            run = [] if r is None else [r]

    def read_chunk(self, i: int) -> bytes | None:
        offset, nbytes = (int(v) for v in self.index[i])
        if offset == _NO_CHUNK:
            return None
        if i in self.cached:
            return bytes(self.cached[i])
        data = self._pread(offset, nbytes)
        if len(data) != nbytes:
            raise StoreError(f"shard file {self.path}: short read of chunk {i}; re-run shard")
        return data

    def read_array(self, i: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        offset, nbytes = (int(v) for v in self.index[i])
        if offset == _NO_CHUNK:  # never written: the fill value
            return np.zeros(shape, dtype=dtype)
        expected = int(np.prod(shape)) * dtype.itemsize
        if nbytes != expected:
            raise StoreError(f"shard file {self.path}: chunk {i} has {nbytes} bytes, "
                             f"expected {expected} (corrupt); re-run the shard")
        if i in self.cached:
            return np.frombuffer(self.cached[i], dtype=dtype).reshape(shape)
        buf = bytearray(nbytes)
        got = self._pread(offset, nbytes, buf)
        if len(got) != nbytes:
            raise StoreError(f"shard file {self.path}: short read of chunk {i}; re-run shard")
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None


def _decode_vlen(raw: bytes, n_items: int, where: str) -> list[bytes]:
    """numcodecs VLenBytes: uint32 LE count, then per item uint32 LE length + bytes."""
    mv = memoryview(raw)
    try:
        count = int.from_bytes(mv[:4], "little")
        if count != n_items:
            raise ValueError(f"{count} items, expected {n_items}")
        items, pos = [], 4
        for _ in range(count):
            length = int.from_bytes(mv[pos:pos + 4], "little")
            pos += 4
            if pos + length > len(mv):
                raise ValueError("item runs past the chunk")
            items.append(bytes(mv[pos:pos + length]))
            pos += length
    except ValueError as exc:
        raise StoreError(f"shard {where}: frames chunk is corrupt ({exc}); re-run the "
                         "shard") from exc
    return items
