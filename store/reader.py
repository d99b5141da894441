"""Reading a store: the index as Arrow, clips by id or row, whole shards in one go.

A Store is cheap to pickle (DataLoader workers): it carries its path, spec and loaded
index, never open files; shard handles are reopened lazily, per process, and kept in a
small LRU cache.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from store.backends import ShardReader, ShardRow, get_backend
from store.backends.fs import forget_listings, is_local, join, resolve
from store.errors import StoreError, rebuild_hint
from store.index import check_shard_file, read_index, read_vocabulary
from store.records import OK, Clip, clip_checksum
from store.writer import read_spec

__all__ = ["Clip", "Store", "open_store"]

log = logging.getLogger(__name__)


CHECKSUM_MODES = ("off", "once", "always")


def open_store(path: str, cache_size: int = 16, engine: str = "auto",
               checksums: bool | str = False, shards: Iterable[int] | None = None) -> Store:
    """Open a store for reading. ``engine`` (zarr backend only): "auto" reads shard files
    directly when their codecs allow it, "zarr" always goes through the zarr library.
    ``checksums``: re-check clips read against the index (StoreError on mismatch) instead
    of leaving that to `pipeline verify`: "always" (or True) every read (~0.5 ms per clip),
    "once" the first read of each clip in this process (the cheap option: later epochs
    cost nothing), "off" (or False) never. ``shards``: see only these shards (reads only
    their index parts; what a per-shard task wants).

    An unreadable index part does not stop the others: its shard is left out, named in
    ``Store.unreadable_parts`` (path -> reason with the rebuild advice) and logged."""
    return Store(path, cache_size=cache_size, engine=engine, checksums=checksums,
                 shards=shards)


class Store:
    """A read-only view of the committed shards of a store."""

    def __init__(self, path: str, cache_size: int = 16, engine: str = "auto",
                 checksums: bool | str = False, shards: Iterable[int] | None = None) -> None:
        self.path = os.fspath(path)
        self.shards = None if shards is None else sorted({int(s) for s in shards})
        self.checksums = checksums
        self.unreadable_parts: dict[str, str] = {}
        self.cache_size = max(1, int(cache_size))
        self.engine = engine
        self.fs, self.root = resolve(self.path)
        self.spec = read_spec(self.fs, self.root)
        self.vocabulary: pa.Table = read_vocabulary(self.fs, self.root)
        self._index: pa.Table | None = None
        self._reset_caches()

    # -- pickling: no open handles travel ------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "cache_size": self.cache_size, "engine": self.engine,
                "checksums": self.checksums, "spec": self.spec, "shards": self.shards,
                "vocabulary": self.vocabulary, "index": self._index,
                "unreadable_parts": self.unreadable_parts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.cache_size = state["path"], state["cache_size"]
        self.engine, self.spec = state["engine"], state["spec"]
        self.checksums, self.shards = state["checksums"], state["shards"]
        self.vocabulary, self._index = state["vocabulary"], state["index"]
        self.unreadable_parts = state.get("unreadable_parts", {})
        self.fs, self.root = resolve(self.path)
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._handles: OrderedDict[str, ShardReader] = OrderedDict()
        self._pid = os.getpid()
        self._cols: _IndexColumns | None = None
        self._pos: dict[str, int] | None = None
        self._shard_rows: dict[int, np.ndarray] | None = None
        self._row_maps: dict[int, dict[int, int]] = {}
        self._verified: set[int] = set()  # positions checked in this process ("once")

    @property
    def checksums(self) -> str:
        """The checksum mode: "off", "once" or "always"."""
        return self._checksums

    @checksums.setter
    def checksums(self, mode: bool | str) -> None:
        mode = {True: "always", False: "off"}.get(mode, mode) if isinstance(mode, bool) \
            else mode
        if mode not in CHECKSUM_MODES:
            raise StoreError(f"checksums must be one of {CHECKSUM_MODES} (or a bool), got "
                             f"{mode!r}")
        self._checksums = mode

    # -- the index ------------------------------------------------------------------------
    def index(self) -> pa.Table:
        """All committed index parts, one row per clip (failed clips included)."""
        if self._index is None:
            bad: dict[str, str] = {}
            self._index = read_index(self.fs, self.root, self.shards, unreadable=bad)
            self.unreadable_parts = bad
            for part, reason in bad.items():
                log.warning("store %s: leaving out %s: %s", self.path, part, reason)
        return self._index

    def refresh(self) -> None:
        """Re-read the index (shards committed since opening become visible)."""
        self.close()
        forget_listings(self.fs)
        self._index = None
        self._reset_caches()

    def __len__(self) -> int:
        return self.index().num_rows

    def filter(self, split: str | Iterable[str] | None = None, status: str | None = OK,
               labels: int | Iterable[int] | None = None) -> pa.Table:
        """Index rows matching all given conditions, with an extra int64 column "index"
        (the row number in index(), what get() takes). ``split``: a name, a list of names or
        comma-joined names ("fold1,fold2": split names never hold a comma, so a recipe's
        ``data.split`` string can name several). ``labels``: any of these."""
        import pyarrow.compute as pc  # here: ~30 ms to import, and writers never filter

        table = self.index()
        table = table.append_column("index", pa.array(np.arange(table.num_rows,
                                                                dtype=np.int64)))
        mask = pa.array(np.ones(table.num_rows, dtype=bool))
        if split is not None:
            splits = split.split(",") if isinstance(split, str) else list(split)
            mask = pc.and_(mask, pc.is_in(table["split"], pa.array(splits, pa.string())))
        if status is not None:
            mask = pc.and_(mask, pc.equal(table["status"], status))
        if labels is not None:
            wanted = [labels] if isinstance(labels, int | np.integer) else list(labels)
            flat = pc.list_flatten(table["labels"])
            parent = pc.list_parent_indices(table["labels"])
            hit = pc.is_in(flat, pa.array(wanted, pa.int32()))
            has = np.zeros(table.num_rows, dtype=bool)
            has[np.asarray(parent)[np.asarray(hit, dtype=bool)]] = True
            mask = pc.and_(mask, pa.array(has))
        return table.filter(mask)

    def _columns(self) -> _IndexColumns:
        if self._cols is None:
            self._cols = _IndexColumns(self.index())
        return self._cols

    def position(self, key: str | int) -> int:
        """Row number in index() of a clip id (or a row number, checked)."""
        n = len(self)
        if isinstance(key, int | np.integer):
            if not -n <= key < n:
                raise StoreError(f"row {key} out of range: store {self.path} has {n} clips")
            return int(key) % n
        if self._pos is None:
            self._pos = {}
            for i, c in enumerate(self._columns()["clip_id"]):
                self._pos.setdefault(c, i)
        pos = self._pos.get(key)
        if pos is None:
            left_out = "".join(f"; it may be in a shard left out: {r}"
                               for r in self.unreadable_parts.values())
            raise StoreError(f"unknown clip id {key!r} in store {self.path}; check "
                             f"Store.index() for the ids it holds{left_out}")
        return pos

    # -- clips ----------------------------------------------------------------------------
    def get(self, key: str | int) -> Clip:
        """One clip by clip id or index row number."""
        i = self.position(key)
        cols = self._columns()
        self._check_ok(i)
        shard_file = cols["shard_file"][i]
        (row,) = self._handle(shard_file).read([int(cols["row"][i])])
        return self._clip(i, row)

    def read_shard(self, shard_id: int, rows: Sequence[int] | None = None) -> list[Clip]:
        """Ok clips of one shard (one open, batched reads). ``rows``: positions in the
        shard's data arrays (index column "row"); default all ok clips in index order."""
        by_row = self._row_map(int(shard_id))
        cols = self._columns()
        wanted = sorted(by_row) if rows is None else [int(r) for r in rows]
        missing = [r for r in wanted if r not in by_row]
        if missing:
            raise StoreError(f"shard {shard_id} has no ok clips at rows {missing[:5]}")
        if not wanted:
            return []
        shard_file = cols["shard_file"][by_row[wanted[0]]]
        data = self._handle(shard_file).read(wanted)
        return [self._clip(by_row[r], d) for r, d in zip(wanted, data, strict=True)]

    def prefetch(self, shard_rows: Iterable[tuple[int, int]]) -> int:
        """Object storage: fetch the chunks of (shard id, row) pairs -- a batch spanning
        several shards -- in one round of concurrent range GETs, kept until the next
        ``read_shard`` of those rows (backends/ranges.py). Returns the number of ranges
        requested; a no-op (0) on local disk and for HDF5 shards."""
        if is_local(self.fs):
            return 0
        by_shard: dict[int, list[int]] = {}
        for shard, row in shard_rows:
            by_shard.setdefault(int(shard), []).append(int(row))
        wanted = []
        cols = self._columns()
        for shard, rows in by_shard.items():
            by_row = self._row_map(shard)
            if rows[0] not in by_row:
                continue  # read_shard reports it
            handle = self._handle(cols["shard_file"][by_row[rows[0]]])
            if hasattr(handle, "remote_chunks"):
                wanted += handle.remote_chunks(rows)
        from store.backends.ranges import fetch_chunks

        return fetch_chunks(self.fs, wanted)

    def shard_ids(self) -> list[int]:
        return sorted(self._shard_map())

    def _shard_map(self) -> dict[int, np.ndarray]:
        if self._shard_rows is None:
            shards = self._columns()["shard"]
            order = np.argsort(shards, kind="stable")
            uniq, starts = np.unique(shards[order], return_index=True)
            groups = np.split(order, starts[1:]) if len(order) else []
            self._shard_rows = {int(s): g for s, g in zip(uniq, groups, strict=True)}
        return self._shard_rows

    def _row_map(self, shard_id: int) -> dict[int, int]:
        """{row in the shard's arrays: row in index()} for the ok clips of one shard."""
        m = self._row_maps.get(shard_id)
        if m is None:
            rows = self._columns()["row"]
            m = {int(rows[p]): int(p) for p in self._shard_positions(shard_id) if rows[p] >= 0}
            self._row_maps[shard_id] = m
        return m

    def _shard_positions(self, shard_id: int) -> np.ndarray:
        positions = self._shard_map().get(shard_id)
        if positions is None:
            raise StoreError(f"shard {shard_id} is not committed in store {self.path}")
        return positions

    def _check_ok(self, i: int) -> None:
        cols = self._columns()
        if cols["status"][i] != OK or cols["row"][i] < 0:
            raise StoreError(f"clip {cols['clip_id'][i]!r} has no features: status "
                             f"{cols['status'][i]!r} ({cols['error'][i]}); use "
                             "Store.filter() to select ok clips")

    def _clip(self, i: int, data: ShardRow) -> Clip:
        import torch

        c = self._columns()
        n = int(c["video_frames"][i])
        samples = int(c["audio_samples"][i])
        if self._checksums == "always" or (self._checksums == "once"
                                          and i not in self._verified):
            wav_bytes = b"" if data.waveform is None else \
                data.waveform[:samples].astype("<i2").tobytes()
            got = clip_checksum(data.fbank.astype("<f2").tobytes(), data.frames[:n], wav_bytes)
            if got != c["checksum"][i]:
                raise StoreError(f"clip {c['clip_id'][i]!r} in {c['shard_file'][i]}: checksum "
                                 "mismatch (corrupt shard; `pipeline verify` lists every bad "
                                 "clip); "
                                 f"{rebuild_hint(int(c['shard'][i]))}")
            self._verified.add(i)
        wav = None
        if data.waveform is not None:
            wav = torch.from_numpy(np.ascontiguousarray(data.waveform[:samples]))
        return Clip(clip_id=c["clip_id"][i], labels=c["labels"][i],
                    fbank=torch.from_numpy(data.fbank), audio_frames=int(c["audio_frames"][i]),
                    frames=data.frames[:n], height=int(c["height"][i]),
                    width=int(c["width"][i]), duration=float(c["duration"][i]),
                    has_audio=bool(c["has_audio"][i]), has_video=bool(c["has_video"][i]),
                    waveform=wav, index=i, split=c["split"][i])

    def checksum_ok(self, clip: Clip) -> bool:
        """Whether a clip read from this store still has the bytes its index row certifies
        (the FORMAT.md checksum recomputed from ``clip``)."""
        i = clip.index
        wav = b"" if clip.waveform is None else clip.waveform.numpy().astype("<i2").tobytes()
        got = clip_checksum(clip.fbank.numpy().astype("<f2").tobytes(), clip.frames, wav)
        return got == self._columns()["checksum"][i]

    def _handle(self, shard_file: str) -> ShardReader:
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours
            self._handles = OrderedDict()
            self._pid = os.getpid()
            if not is_local(self.fs):  # nor its s3fs client (event loop thread, sockets)
                self.fs, self.root = resolve(self.path)
        h = self._handles.get(shard_file)
        if h is not None:
            self._handles.move_to_end(shard_file)
            return h
        backend = get_backend(self.spec.backend)
        if self.spec.backend == "zarr":
            from store.backends.zarr_backend import ZarrBackend

            backend = ZarrBackend(self.engine)
        check_shard_file(shard_file, f"store {self.path}")
        h = backend.open(self.fs, join(self.root, shard_file), self.spec)
        self._handles[shard_file] = h
        while len(self._handles) > self.cache_size:
            _, old = self._handles.popitem(last=False)
            old.close()
        return h

    def close(self) -> None:
        """Close cached shard handles (they reopen on the next read)."""
        if os.getpid() == self._pid:
            for h in self._handles.values():
                h.close()
        self._handles.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        n = "?" if self._index is None else str(self._index.num_rows)
        return f"Store({self.path!r}, backend={self.spec.backend!r}, clips={n})"


class _ListColumn:
    """Row access to a list<int32> column without building 2M Python lists up front."""

    def __init__(self, arr: pa.ListArray) -> None:
        self.offsets = arr.offsets.to_numpy()
        self.values = arr.values.to_numpy(zero_copy_only=False)

    def __getitem__(self, i: int) -> list[int]:
        return self.values[self.offsets[i]:self.offsets[i + 1]].tolist()


class _DictColumn:
    """Row access to a low-cardinality string column (split, status, shard_file)."""

    def __init__(self, arr: pa.Array) -> None:
        import pyarrow.compute as pc

        enc = pc.dictionary_encode(arr)
        self.indices = enc.indices.to_numpy(zero_copy_only=False)
        self.names = enc.dictionary.to_pylist()

    def __getitem__(self, i: int) -> str:
        return self.names[self.indices[i]]


class _IndexColumns:
    """Index columns converted lazily, each once, into the fastest form for row access."""

    LOW_CARDINALITY = ("split", "status", "shard_file")

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        col = self._cache.get(name)
        if col is None:
            arr = self.table[name].combine_chunks()
            if pa.types.is_list(arr.type):
                col = _ListColumn(arr)
            elif pa.types.is_string(arr.type):
                col = _DictColumn(arr) if name in self.LOW_CARDINALITY else arr.to_pylist()
            else:
                col = arr.to_numpy(zero_copy_only=False)
            self._cache[name] = col
        return col
