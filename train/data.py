"""Recipe -> store dataset + sampler + view + DataLoader, one per rank, resumable.

Two loaders, both exact on resume (a rank's sample sequence is a pure function of the seed,
epoch and position, never of the global RNG or the worker count):

* ``data.loader=map`` (default): :class:`store.datasets.ClipDataset` (augmentation seeded by
  (seed, epoch, item)) under a per-epoch seeded sampler whose draws are dealt to ranks
  round-robin (rank r takes r, r + W, ...): ``shuffle`` - a permutation, every clip once per
  epoch (:class:`~store.samplers.DistributedShuffleSampler`); ``balanced`` - weights
  1000 / (n_c + 0.01) summed over a clip's labels, ``samples_per_epoch`` draws with
  replacement (:class:`~store.samplers.WeightedSampler`; 200,000 on AS-2M). Dealing draws
  round-robin makes global batch b the same clips for any world size at a fixed effective
  batch - which is what lets ``torchrun`` runs equal single-process runs.
* ``data.loader=stream``: :class:`store.datasets.StreamingDataset` (shard-local reads for
  remote stores) behind :class:`~store.datasets.ResumableLoader`.

Video leaves the workers as uint8 pixels unless the view mixes video (mixup): the loop turns
each batch into model inputs with ``loader.dataset.view.to_device(batch, device)``, which
ImageNet-normalises on the device - the same float32 values as normalising in the worker.

An epoch is ``steps_per_epoch`` optimizer steps of ``batch_size x world x accum`` samples;
a tail too short for a whole optimizer step is dropped (drop_last).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from store import open_store
from store.batch_ring import RingLoader
from store.class_balance import balance_to_reference
from store.datasets import ClipDataset, ResumableLoader, StreamingDataset
from store.errors import StoreError
from store.reader import Store
from store.samplers import DistributedShuffleSampler, WeightedSampler
from store.views.presets import make_view
from store.views.sample import SampleView


class DataError(ValueError):
    """The store or split cannot feed this recipe; the message says why."""


def open_train_store(path: str) -> Store:
    if not path:
        raise DataError("no store given (--store S or data.store=S)")
    try:
        return open_store(path)
    except (StoreError, FileNotFoundError, OSError) as exc:
        raise DataError(f"cannot open store {path}: {str(exc).splitlines()[0]}") from None


def vocabulary(store: Store) -> list[str]:
    """The store's class ids in ``index`` order (labels.parquet ``mid``)."""
    vocab = store.vocabulary
    if vocab is None or vocab.num_rows == 0:
        return []
    order = sorted(range(vocab.num_rows), key=lambda i: vocab["index"][i].as_py())
    mids = vocab["mid"].to_pylist()
    return [str(mids[i]) for i in order]


def fill_from_store(cfg: Any, store: Store) -> None:
    """What the recipe leaves to the store, set in ``cfg.data``: its backend, the clip length
    it was built with (``audio_frames`` null), its vocabulary and class count."""
    cfg.data.format = store.spec.backend
    if cfg.data.audio_frames is None:
        cfg.data.audio_frames = store.spec.target_frames
    cfg.data.vocabulary = vocabulary(store)
    cfg.data.num_classes = len(cfg.data.vocabulary)


def build_view(cfg: Any, store: Store, num_classes: int | None, train: bool = True
               ) -> SampleView:
    """The recipe's view: preset name, normalisation, augmentation, input sizes."""
    d = cfg.data
    kw: dict[str, Any] = {"norm": d.norm, "labels": bool(num_classes)}
    if num_classes:
        kw.update(num_classes=num_classes, multi_label=d.multi_label)
    for key in ("time_mask", "freq_mask", "mixup", "noise_snr_db"):
        if train and d[key] is not None:
            kw[key] = d[key]
    video_kw = {"size": d.video_size, **dict(d.view_kw)}
    if d.view.startswith(("mavil", "video")):
        video_kw.setdefault("num_frames", d.num_frames)
    try:
        view = make_view(d.view, **kw, **video_kw)
    except (TypeError, ValueError) as exc:
        raise DataError(f"view {d.view!r}: {exc}") from None
    try:  # the "store" preset's mean / std from store.json (the datasets would do it too)
        view = view.for_store(store.vocabulary.num_rows, store.spec.stats)
    except ValueError as exc:
        raise DataError(f"data.norm={d.norm!r}: {exc}") from None
    unused = {m: None for m in ("audio", "video") if m not in cfg.model.inputs}
    if unused:  # do not decode what the model never sees (e.g. video for audio fine-tuning)
        view = dataclasses.replace(view, **unused)
    if view.audio is not None and view.audio.target_frames != d.audio_frames:
        view = dataclasses.replace(
            view, audio=dataclasses.replace(view.audio, target_frames=d.audio_frames))
    if view.video is not None and not (view.mixup is not None and view.mixup.mix_video):
        # uint8 pixels out of the workers (4x fewer bytes); the loop normalises them on its
        # device with view.to_device (mixup mixes normalised pixels, so it keeps float)
        view = dataclasses.replace(view, video=dataclasses.replace(view.video, pixels="uint8"))
    return view


class _From(Sampler[int]):
    """A sampler's sequence from position ``start`` on (resume mid-epoch)."""

    def __init__(self, base: Sampler[int], start: int = 0) -> None:
        self.base, self.start = base, int(start)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.start)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.start, None)


class MapLoader:
    """ClipDataset + seeded sampler + DataLoader, counting what the trainer consumed."""

    def __init__(self, dataset: ClipDataset, sampler: Sampler[int], batch_size: int,
                 num_workers: int, world_size: int, kind: str) -> None:
        self.dataset, self.sampler = dataset, sampler
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.world_size, self.kind = int(world_size), kind
        self.epoch = self.start = self.consumed = 0

    @property
    def per_rank(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start, self.consumed = int(epoch), 0, 0
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loader = RingLoader(  # workers hand batches over in reused shared memory
            self.dataset, batch_size=self.batch_size, sampler=_From(self.sampler, self.start),
            num_workers=self.num_workers, drop_last=True, pin_memory=True,
            generator=torch.Generator(),  # never draw from the global RNG (exact resume)
        )
        for batch in loader:
            self.consumed += len(batch["index"])
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "epoch": self.epoch, "consumed": self.start + self.consumed,
                "world_size": self.world_size, "num_clips": len(self.dataset),
                "seed": self.dataset.seed, "per_rank": self.per_rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("kind", "world_size", "num_clips", "seed", "per_rank"):
            if state.get(key) != self.state_dict()[key]:
                raise DataError(f"cannot resume the loader exactly: saved {key}="
                                f"{state.get(key)!r}, now {self.state_dict()[key]!r}")
        self.set_epoch(int(state["epoch"]))
        self.start = int(state["consumed"])


class StreamLoader(ResumableLoader):
    kind = "stream"

    @property
    def per_rank(self) -> int:
        return self.dataset.per_rank

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            super().load_state_dict({k: v for k, v in state.items() if k != "kind"})
        except ValueError as exc:
            raise DataError(str(exc)) from None


def build_loader(cfg: Any, store: Store, rank: int, world_size: int, num_classes: int | None
                 ) -> MapLoader | StreamLoader:
    """This rank's training loader for the recipe (see the module docstring)."""
    d = cfg.data
    view = build_view(cfg, store, num_classes)
    seed = int(cfg.train.seed)
    try:
        if d.loader == "stream":
            if d.sampler != "shuffle":
                raise DataError("data.loader=stream shuffles; balanced sampling needs "
                                "data.loader=map")
            ds = StreamingDataset(store, view, split=d.split, require=list(d.require), seed=seed,
                                  batch_size=d.batch_size, shuffle_buffer=d.shuffle_buffer,
                                  rank=rank, world_size=world_size)
            return StreamLoader(ds, d.batch_size, d.num_workers, pin_memory=True)
        ds = ClipDataset(store, view, split=d.split, require=list(d.require), seed=seed,
                         deterministic=True)
    except ValueError as exc:
        raise DataError(str(exc).splitlines()[0]) from None
    if d.sampler == "balanced":
        n = int(d.samples_per_epoch or len(ds))
        try:
            sampler: Sampler[int] = WeightedSampler(ds.sampling_weights(num_classes or None), n,
                                                    rank=rank, world_size=world_size, seed=seed)
        except ValueError as exc:
            raise DataError(f"balanced sampling over split {d.split!r}: {exc}") from None
    elif d.sampler == "unknown_half":  # MAViL Table 10 footnote * (Speech Commands)
        sampler = _unknown_half_sampler(ds, store, rank, world_size, seed)
    else:
        sampler = DistributedShuffleSampler(len(ds), rank=rank, world_size=world_size,
                                            shuffle=True, seed=seed)
    return MapLoader(ds, sampler, d.batch_size, d.num_workers, world_size, d.sampler)


def _unknown_half_sampler(ds: ClipDataset, store: Store, rank: int, world_size: int,
                          seed: int) -> WeightedSampler:
    """Each class repeated and balanced to 50 % of the ``_unknown_`` class's size, drawn with
    replacement (store/class_balance.py)."""
    mids = vocabulary(store)
    if "_unknown_" not in mids:
        raise DataError("data.sampler=unknown_half needs a store with an '_unknown_' class "
                        "(pipeline build-speechcommands --task 12)")
    try:
        weights, draws = balance_to_reference(ds.labels, mids.index("_unknown_"), 0.5)
    except ValueError as exc:
        raise DataError(f"data.sampler=unknown_half: {exc}") from None
    return WeightedSampler(weights, draws, rank=rank, world_size=world_size, seed=seed)


def steps_per_epoch(loader: MapLoader | StreamLoader, batch_size: int, accum: int) -> int:
    return loader.per_rank // (batch_size * accum)


def accumulation(eff_batch: int, batch_size: int, world_size: int) -> int:
    """Micro-steps per optimizer step so that batch x world x accum = the effective batch."""
    per_step = batch_size * world_size
    accum = eff_batch // per_step
    if accum < 1 or accum * per_step != eff_batch:
        raise DataError(
            f"effective batch optim.batch_size={eff_batch} is not a multiple of "
            f"data.batch_size={batch_size} x {world_size} process(es) = {per_step}")
    return accum

