"""Torch datasets over a store: map-style (random access) and streaming (shard-aware).

Both read through :func:`store.open_store` (local paths or fsspec URLs), keep only clips with
features (status "ok"), optionally only those with audio / video (``require``), and turn each
clip into a sample with a view (store.views). Each sample's augmentation draws from its own
generator seeded by (seed, epoch, position), so runs are reproducible and resumable.

:class:`StreamingDataset` epoch plan (a pure function of seed, epoch, rank, world size):

1. order: shards in a seeded random order, rows permuted within each shard ("shard" mode,
   reads stay local) - or one seeded global permutation when there are fewer than
   2 shards per rank ("sample" mode, so few shards never starve ranks or workers);
2. pad by wrapping to a multiple of world_size; rank r takes the r-th contiguous chunk,
   so every rank yields exactly the same count;
3. a shuffle buffer (``shuffle_buffer`` samples) mixes the rank's chunk; it runs on the
   index stream, so the order stays a pure function of the seed;
4. the chunk is cut into batches of ``batch_size`` and DataLoader worker w takes batches
   w, w + W, ...; torch's DataLoader hands batches out round-robin over workers, so the
   trainer sees the rank's sequence in order for any worker count (pass the DataLoader the
   same batch_size), and a resume at sample k continues exactly with sample k.

Use non-persistent workers and in-order delivery (both DataLoader defaults): persistent
workers keep a stale epoch, and ``in_order=False`` breaks the round-robin that exact resume
relies on (every clip is still seen once per epoch either way).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from store.backends.fs import is_local
from store.batch_ring import RingLoader
from store.errors import StoreError
from store.jpeg import collate
from store.reader import Store, open_store
from store.samplers import dist_rank_world, label_weights
from store.views.rng import derive_seed, sample_generator
from store.views.sample import SampleView

MODALITIES = ("audio", "video")
ON_ERROR = ("raise", "skip")
log = logging.getLogger(__name__)


def _open(store: str | Store) -> Store:
    return store if isinstance(store, Store) else open_store(str(store))


def select_clips(
    store: Store, split: str | Sequence[str] | None = None, require: Sequence[str] = ()
) -> pa.Table:
    """Index rows with features (status ok), of ``split``, with the ``require``d modalities.

    The table has the store's index columns plus "index" (row number in Store.index())."""
    bad = [m for m in require if m not in MODALITIES]
    if bad:
        raise ValueError(f"require takes {MODALITIES}, not {bad}")
    table = store.filter(split=split)
    for m in require:
        table = table.filter(pc.equal(table[f"has_{m}"], True))
    return table


class _ClipSource:
    """Shared by both datasets: the selected clips and how to turn one into a sample.

    ``on_error``: what a damaged clip (unreadable shard file, checksum mismatch) does:
    "raise" (default) stops with the StoreError naming the file; "skip" logs the clip,
    counts it (``skipped``: clip ids, per process) and serves the next readable selected
    clip in its place (item i -> i+1, i+2, ...), so every rank still yields the same number
    of samples and the epoch stays a pure function of (seed, epoch, damaged clips).
    ``checksums``: set the store's read checks ("once" is the cheap option: each clip is
    verified the first time this process reads it; "always"; "off"); None keeps the
    store's own setting."""

    def __init__(
        self, store: str | Store, view: SampleView, split: Any, require: Sequence[str], seed: int,
        on_error: str = "raise", checksums: bool | str | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        self.on_error = on_error
        self.skipped: list[str] = []
        self._bad: set[int] = set()
        self.store = _open(store)
        if checksums is not None:
            self.store.checksums = checksums
        # labels default to the vocabulary's size, norm "store" to store.json's stats
        self.view = view.for_store(self.store.vocabulary.num_rows, self.store.spec.stats,
                                   self.store.spec.target_frames)
        self.seed = int(seed)
        self.epoch = 0
        table = select_clips(self.store, split, require)
        if table.num_rows == 0:
            raise ValueError(
                f"no clips to load from {self.store.path} (split={split!r}, "
                f"require={tuple(require)}); check `pipeline info STORE`"
            )
        self.positions = table["index"].to_numpy().astype(np.int64)
        self.shards = table["shard"].to_numpy().astype(np.int64)
        self.rows = table["row"].to_numpy().astype(np.int64)
        self.labels: list[list[int]] = table["labels"].to_pylist()

    def __len__(self) -> int:
        return len(self.positions)

    def sampling_weights(self, num_classes: int | None = None) -> np.ndarray:
        """Balanced-sampling weights of the selected clips (store.samplers.label_weights)."""
        if num_classes is None:
            num_classes = self.store.vocabulary.num_rows
        return label_weights(self.labels, num_classes)

    def read(self, items: Sequence[int]) -> list[Any]:
        """Clips for local item numbers, one batched read per shard, in the given order
        (with on_error="skip", a damaged clip's slot holds its substitute)."""
        if self.on_error == "raise":
            return self._read(items)
        try:
            if not any(int(i) in self._bad for i in items):
                return self._read(items)
        except StoreError:
            pass  # find out which clips are damaged, one by one
        return [self._read_or_next(int(i)) for i in items]

    def _read_or_next(self, item: int) -> Any:
        n = len(self)
        for k in range(n):
            j = (item + k) % n
            if j in self._bad:
                continue
            try:
                (clip,) = self._read([j])
                return clip
            except StoreError as exc:
                self._bad.add(j)
                clip_id = self.store.index()["clip_id"][int(self.positions[j])].as_py()
                self.skipped.append(clip_id)
                log.warning("skipping clip %r (%d skipped in this process): %s", clip_id,
                            len(self.skipped), exc)
        raise StoreError(f"no readable clip left in {self.store.path}: all {n} selected "
                         "clips failed; run `pipeline verify STORE`")

    def _read(self, items: Sequence[int]) -> list[Any]:
        by_shard: dict[int, list[int]] = {}
        for k, i in enumerate(items):
            by_shard.setdefault(int(self.shards[i]), []).append(k)
        out: list[Any] = [None] * len(items)
        for shard, ks in by_shard.items():
            clips = self.store.read_shard(shard, [int(self.rows[items[k]]) for k in ks])
            for k, clip in zip(ks, clips, strict=True):
                out[k] = clip
        return out

    def make_sample(self, item: int, clip: Any, g: torch.Generator) -> dict[str, Any]:
        partner = None
        if self.view.wants_partner(g):
            # mixup partner: uniform over the selected clips, as the official code does
            other = int(torch.randint(0, len(self), (1,), generator=g))
            (partner,) = self.read([other])
        sample = self.view(clip, g, partner)
        sample["index"] = int(clip.index)  # = positions[item] unless it was substituted
        return sample


class ClipDataset(_ClipSource, Dataset):
    """Map-style dataset: item i is the i-th selected clip (for samplers, e.g. balanced).

    Augmentation seeds: by default from torch's RNG (DataLoader seeds it per worker and
    epoch); with ``deterministic=True`` from (seed, epoch, i) - then a clip drawn twice in
    one epoch gets the same augmentation.
    """

    def __init__(
        self,
        store: str | Store,
        view: SampleView,
        split: Any = None,
        require: Sequence[str] = (),
        seed: int = 0,
        deterministic: bool = False,
        on_error: str = "raise",
        checksums: bool | str | None = None,
    ) -> None:
        super().__init__(store, view, split, require, seed, on_error, checksums)
        self.deterministic = deterministic

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} clips")
        if self.deterministic:
            g = sample_generator(self.seed, self.epoch, i)
        else:
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        (clip,) = self.read([i])
        return self.make_sample(i, clip, g)


def buffer_shuffle(items: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """The order a shuffle buffer of ``size`` gives (fill, then emit a random slot and refill
    it with the next item; drain randomly). Items move at most ~size places earlier."""
    if size <= 1 or len(items) <= 1:
        return items.copy()
    buf = list(items[:size])
    out = []
    picks = rng.integers(0, len(buf), size=max(len(items) - len(buf), 0))
    for nxt, j in zip(items[len(buf) :], picks, strict=True):
        out.append(buf[j])
        buf[j] = nxt
    out.extend(np.asarray(buf)[rng.permutation(len(buf))].tolist())
    return np.asarray(out, dtype=items.dtype)


class StreamingDataset(_ClipSource, IterableDataset):
    """Shard-aware streaming dataset for DDP x DataLoader workers (see module docstring).

    ``batch_size`` must equal the DataLoader's (it sets how batches are dealt to workers);
    ``rank`` / ``world_size`` default to torch.distributed's. ``drop_last`` cuts the epoch to
    a multiple of world_size instead of wrapping.
    """

    MIN_SHARDS_PER_RANK = 2

    def __init__(
        self,
        store: str | Store,
        view: SampleView,
        split: Any = None,
        require: Sequence[str] = (),
        seed: int = 0,
        shuffle: bool = True,
        batch_size: int = 1,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        partition: str = "auto",
        on_error: str = "raise",
        checksums: bool | str | None = None,
    ) -> None:
        super().__init__(store, view, split, require, seed, on_error, checksums)
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        if partition not in ("auto", "shard", "sample"):
            raise ValueError("partition must be 'auto', 'shard' or 'sample'")
        self.shuffle, self.batch_size = shuffle, max(1, int(batch_size))
        self.shuffle_buffer, self.drop_last, self.partition = shuffle_buffer, drop_last, partition
        self.offset = 0  # samples of this epoch already consumed on this rank (resume)
        n = len(self.positions)
        self.per_rank = n // self.world_size if drop_last else math.ceil(n / self.world_size)
        if self.per_rank == 0:
            raise ValueError(
                f"{n} clips cannot give every one of {self.world_size} ranks a "
                "sample with drop_last"
            )

    # -- epochs and resumption ------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning (call before each epoch)."""
        self.epoch, self.offset = int(epoch), 0

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this rank stands: ``consumed`` = samples of the current epoch the trainer
        has taken from the loader (ResumableLoader counts them for you)."""
        used = self.offset if consumed is None else self.offset + int(consumed)
        return {
            "epoch": self.epoch,
            "consumed": used,
            "seed": self.seed,
            "world_size": self.world_size,
            "rank": self.rank,
            "num_clips": len(self.positions),
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration starts at sample ``state["consumed"]`` of its epoch."""
        for key in ("seed", "world_size", "num_clips", "shuffle"):
            mine = self.state_dict()[key]
            if state.get(key, mine) != mine:
                raise ValueError(
                    f"cannot resume: saved {key}={state[key]!r} but this dataset "
                    f"has {mine!r}; the sample order would differ"
                )
        self.epoch, self.offset = int(state["epoch"]), int(state["consumed"])
        if not 0 <= self.offset <= self.per_rank:
            raise ValueError(f"consumed {self.offset} outside 0..{self.per_rank}")

    def __len__(self) -> int:
        return self.per_rank - self.offset

    # -- the epoch plan -------------------------------------------------------------------
    def epoch_order(self, epoch: int | None = None) -> np.ndarray:
        """Local item numbers this rank yields in ``epoch``, in order (length per_rank)."""
        epoch = self.epoch if epoch is None else int(epoch)
        n = len(self.positions)
        rng = np.random.default_rng(derive_seed(self.seed, epoch))
        items = np.arange(n, dtype=np.int64)
        if self.shuffle:
            if self._mode() == "shard":
                by_shard = np.argsort(self.shards, kind="stable")
                shard_ids, starts = np.unique(self.shards[by_shard], return_index=True)
                groups = np.split(by_shard, starts[1:])
                items = np.concatenate(
                    [rng.permutation(groups[k]) for k in rng.permutation(len(shard_ids))]
                )
            else:
                items = rng.permutation(items)
        total = self.per_rank * self.world_size
        if total > n:  # pad by wrapping so every rank gets the same count
            items = np.concatenate([items] * math.ceil(total / n))
        chunk = items[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
        if self.shuffle and self.shuffle_buffer > 1:
            rng_r = np.random.default_rng(derive_seed(self.seed, epoch, self.rank, 1))
            chunk = buffer_shuffle(chunk, self.shuffle_buffer, rng_r)
        return chunk

    def _mode(self) -> str:
        if self.partition != "auto":
            return self.partition
        n_shards = len(np.unique(self.shards))
        return "shard" if n_shards >= self.MIN_SHARDS_PER_RANK * self.world_size else "sample"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = self.epoch_order()
        b = self.batch_size
        start = self.offset
        n_batches = math.ceil((len(order) - start) / b)
        mine = [order[start + j * b : start + (j + 1) * b]
                for j in range(worker, n_batches, workers)]
        los = [start + j * b for j in range(worker, n_batches, workers)]
        for lo, items, clips in zip(los, mine, self._read_ahead(mine), strict=True):
            for k, (item, clip) in enumerate(zip(items, clips, strict=True)):
                g = sample_generator(self.seed, self.epoch, self.rank, lo + k)
                yield self.make_sample(int(item), clip, g)

    def _read_ahead(self, batches: list[np.ndarray]) -> Iterator[list[Any]]:
        """The clips of each batch in turn. On object storage the next two batches
        are fetched in a background thread while this one is turned into samples, each
        batch with one round of concurrent range requests over all its shards
        (Store.prefetch), so the round trips overlap decoding (FORMAT.md "Object
        storage"); locally it reads in place."""
        if is_local(self.store.fs):
            for items in batches:
                yield self.read([int(i) for i in items])
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        def fetch(items: np.ndarray) -> list[Any]:
            try:
                self.store.prefetch((int(self.shards[i]), int(self.rows[i])) for i in items)
            except StoreError:
                pass  # read() reports it, or skips the clip (on_error="skip")
            return self.read([int(i) for i in items])

        depth = 2  # batches in flight: a slow round trip does not stall the decoder
        with ThreadPoolExecutor(1, thread_name_prefix="store-read-ahead") as pool:
            ahead = deque(pool.submit(fetch, b) for b in batches[:depth])
            for nxt in [*batches[depth:], *[None] * len(ahead)]:
                clips = ahead.popleft().result()
                if nxt is not None:
                    ahead.append(pool.submit(fetch, nxt))
                yield clips


class ResumableLoader:
    """A torch DataLoader over a StreamingDataset that counts what the trainer consumed,
    so ``state_dict()`` can be saved in a checkpoint and a run resumes on the next sample.

    With workers, batches come through reused shared-memory slots (store.batch_ring:
    the DataLoader-level rate is then close to workers x the per-worker rate; FORMAT.md
    "Loader throughput"); ``pin_memory`` pins the copies the trainer receives. A custom
    ``collate_fn`` gets a plain DataLoader."""

    def __init__(
        self, dataset: StreamingDataset, batch_size: int, num_workers: int = 0, **loader_kw: Any
    ) -> None:
        if loader_kw.get("persistent_workers"):
            raise ValueError("persistent workers would keep a stale epoch; leave them off")
        if loader_kw.get("in_order") is False:
            raise ValueError("in_order=False would make the resume point inexact")
        dataset.batch_size = int(batch_size)
        self.dataset = dataset
        if loader_kw.get("collate_fn", collate) is collate:
            self.loader: Any = RingLoader(
                dataset, batch_size=batch_size, num_workers=num_workers, **loader_kw
            )
        else:
            self.loader = DataLoader(
                dataset, batch_size=batch_size, num_workers=num_workers, **loader_kw
            )
        self.consumed = 0

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
        self.consumed = 0

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.dataset.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.consumed += len(batch["index"])
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict(consumed=self.consumed)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
        self.consumed = 0
