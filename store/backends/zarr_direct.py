"""The direct Zarr v3 shard reader: one positioned read per clip, no zarr library.

zarr-python 3's synchronous API costs ~1-1.5 ms per array read (its asyncio loop thread),
too slow for thousands of clips/s per loader worker. For arrays that are exactly one
``sharding_indexed`` shard of raw (or blosc) inner chunks, this module parses the shard
index at the end of the file once (uint64 LE (offset, nbytes) per chunk + CRC32C) and then
reads a clip's chunk with one ``pread``. store/FORMAT.md "Zarr backend" has the layout;
:func:`direct_readable` decides from zarr.json whether an array qualifies.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from store.backends.fs import is_local
from store.backends.ranges import NO_CHUNK
from store.errors import StoreError, rebuild_hint

BYTES_LE = {"name": "bytes", "configuration": {"endian": "little"}}
INDEX_CODECS = [BYTES_LE, {"name": "crc32c"}]
# fbank_compression "lossless": byte shuffle groups the float16 high bytes, lz4hc packs them
BLOSC = {"name": "blosc", "configuration": {"typesize": 2, "cname": "lz4hc", "clevel": 5,
                                             "shuffle": "shuffle", "blocksize": 0}}


def direct_readable(meta: dict[str, Any]) -> bool:
    """True when an array is exactly one shard of raw, blosc or vlen-bytes inner chunks."""
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
    if conf.get("index_codecs") != INDEX_CODECS or conf.get("index_location") != "end":
        return False
    if meta["data_type"] == "variable_length_bytes":
        return conf["codecs"] == [{"name": "vlen-bytes", "configuration": {}}]
    return meta["data_type"] in ("float16", "int16") and conf["codecs"] in (
        [BYTES_LE], [BYTES_LE, BLOSC])


class ShardFile:
    """One sharded array file: its chunk index (read once), then one read per chunk."""

    def __init__(self, fs: Any, path: str, n_chunks: int, blosc: bool = False) -> None:
        self.path, self.fs, self.blosc = path, fs, blosc
        self._fd: int | None = None
        self._remote = None
        self.cached: dict[int, memoryview] = {}
        try:
            if is_local(fs):
                self._fd = os.open(path, os.O_RDONLY)
                size = os.fstat(self._fd).st_size
            else:  # object store: ranged GETs, no file object (s3fs reads ahead 50 MB)
                self._remote = fs
                size = fs.size(path)
        except FileNotFoundError as exc:
            raise StoreError(f"shard file {path} is missing; {rebuild_hint(path)}") from exc
        index_len = 16 * n_chunks + 4
        if size < index_len:
            raise StoreError(f"shard file {path} is truncated ({size} bytes); "
                             f"{rebuild_hint(path)}")
        raw = self._pread(size - index_len, index_len)
        import google_crc32c

        if np.uint32(google_crc32c.value(raw[:-4])).tobytes() != raw[-4:]:
            raise StoreError(f"shard file {path}: chunk index checksum mismatch (corrupt); "
                             f"{rebuild_hint(path)}")
        self.index = np.frombuffer(raw[:-4], dtype="<u8").reshape(n_chunks, 2)
        ends = self.index[:, 0] + self.index[:, 1]
        present = self.index[:, 0] != NO_CHUNK
        if np.any(ends[present] > size - index_len):
            raise StoreError(f"shard file {path}: chunk index points past the data "
                             f"(truncated or corrupt); {rebuild_hint(path)}")

    def _pread(self, offset: int, nbytes: int, out: Any = None) -> Any:
        if self._fd is not None:
            if out is not None:
                got = os.preadv(self._fd, [out], offset)
                return out if got == nbytes else out[:got]
            return os.pread(self._fd, nbytes, offset)
        assert self._remote is not None
        data = self._remote.cat_file(self.path, start=offset, end=offset + nbytes)
        if out is None:
            return data
        out[: len(data)] = data
        return out if len(data) == nbytes else out[: len(data)]

    def prefetch(self, rows: Sequence[int]) -> None:
        """Read runs of chunks that lie back to back in the file with one read each."""
        present = sorted({r for r in rows if self.index[r, 0] != NO_CHUNK},
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
        if offset == NO_CHUNK:
            return None
        if i in self.cached:
            return bytes(self.cached[i])
        data = self._pread(offset, nbytes)
        if len(data) != nbytes:
            raise StoreError(f"shard file {self.path}: short read of chunk {i}; "
                             f"{rebuild_hint(self.path)}")
        return data

    def read_array(self, i: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        offset, nbytes = (int(v) for v in self.index[i])
        if offset == NO_CHUNK:  # never written: the fill value
            return np.zeros(shape, dtype=dtype)
        expected = int(np.prod(shape)) * dtype.itemsize
        if self.blosc:
            return self._read_blosc(i, dtype, shape, expected)
        if nbytes != expected:
            raise StoreError(f"shard file {self.path}: chunk {i} has {nbytes} bytes, "
                             f"expected {expected} (corrupt); {rebuild_hint(self.path)}")
        if i in self.cached:
            return np.frombuffer(self.cached[i], dtype=dtype).reshape(shape)
        buf = bytearray(nbytes)
        got = self._pread(offset, nbytes, buf)
        if len(got) != nbytes:
            raise StoreError(f"shard file {self.path}: short read of chunk {i}; "
                             f"{rebuild_hint(self.path)}")
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def _read_blosc(self, i: int, dtype: np.dtype, shape: tuple[int, ...], expected: int
                    ) -> np.ndarray:
        """A blosc inner chunk, decompressed straight into the array's own buffer."""
        from numcodecs import blosc

        raw = self.read_chunk(i) or b""
        out = bytearray(expected)
        try:
            # blosc header: 4 flag bytes, then uint32 LE nbytes, blocksize, cbytes
            size = int.from_bytes(raw[4:8], "little") if len(raw) >= 16 else -1
            if int.from_bytes(raw[12:16], "little") != len(raw):
                size = -1
            if size == expected:
                blosc.decompress(raw, out)
        except (RuntimeError, ValueError, TypeError) as exc:
            size = f"undecodable: {exc}"
        if size != expected:
            raise StoreError(f"shard file {self.path}: chunk {i} does not decompress to "
                             f"{expected} bytes ({size}; corrupt); {rebuild_hint(self.path)}")
        return np.frombuffer(out, dtype=dtype).reshape(shape)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing useful to do
            pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._remote = None


def decode_vlen(raw: bytes, n_items: int, where: str) -> list[bytes]:
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
        raise StoreError(f"shard {where}: frames chunk is corrupt ({exc}); "
                         f"{rebuild_hint(where)}") from exc
    return items
