"""Batches from DataLoader workers to the main process through reused shared-memory slots.

torch's DataLoader collates every batch of a worker into fresh shared memory and passes each
tensor's file descriptor to the main process, which maps it, reads it once and unmaps it.
On a VM a first-touched 4 KiB page costs microseconds, so a MAViL sample (1.2 MB of uint8
video + 0.5 MB of float32 audio) pays ~430 page faults in the worker and a socket round trip
per tensor per batch in the main process: more than the worker's own JPEG work on 2 cores
(store/FORMAT.md "Loader throughput").

Here each worker owns ``K`` slots, one shared storage each, reused batch after batch:

* worker (:class:`SlotCollate`, the DataLoader's ``collate_fn``): collates like
  :func:`store.jpeg.collate`, stacking each tensor straight into the next slot (its pages
  are touched once per worker lifetime; uint8 video is rendered there sample by sample, not
  stacked: store/views/deferred.py), and sends a :class:`SlotBatch`: where each tensor
  lies in the slot, and the non-tensor entries unchanged. A slot's storage (file
  descriptor) is sent only the first time it is used or after it was replaced, so the main
  process maps each slot once and keeps it mapped;
* main process (:class:`BatchRing`): without pinned memory (no accelerator) the batch's
  big tensors *are* the slot (no copy; small ones such as labels are copied): the slot is
  leased to the consumer and released to its worker when the last of them is freed, as a
  plain DataLoader's shared-memory batch is freed. With pinned memory every tensor is
  copied out of the slot into pinned memory (the copy torch's pin thread makes) and the
  slot is released at once. A release writes the batch's number into the worker's release
  record, a shared int64 per slot.

Safety does not rest on torch's flow control or on the consumer: a worker writes batch ``j``
into slot ``j % K`` only when the record says that the slot's last batch, ``j - K``, was
released; if not (a consumer keeping batches, a worker left alone at an IterableDataset's
end), it takes a fresh storage for that slot at once, so no worker ever waits on the main
process, and nothing a consumer still holds is ever overwritten. Batches of any size fit:
a slot too small for a batch is replaced by a bigger one. Use :class:`RingLoader` in place
of a DataLoader.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info
from torch.utils.data._utils.collate import collate as torch_collate
from torch.utils.data._utils.collate import collate_tensor_fn, default_collate_fn_map
from torch.utils.data._utils.pin_memory import pin_memory as pin_tree

from store.jpeg import RAGGED_KEYS, collate
from store.views.deferred import PendingVideo, render_batch, render_in_collate

ALIGN = 64  # bytes; every tensor in a slot starts on a cache line
# a leased batch hands on its big tensors (audio, video) as views of the slot and copies
# the small ones (labels, indices, flags): a consumer keeping those does not hold the slot
LEASE_MIN_BYTES = 64 * 1024  # per sample


@dataclass(frozen=True)
class InSlot:
    """A dense tensor at byte ``offset`` of its slot: contiguous (``strides`` None) or in
    another memory order (``strides``: channels-last video, as store.views.render gives it)."""

    offset: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None


@dataclass
class SlotBatch:
    """What a worker sends for one batch: ``tree`` is the collated batch with every tensor
    replaced by its :class:`InSlot` place (tensors that did not fit stay tensors).
    ``number`` counts the worker's batches from 0. ``storage`` is the slot's storage the
    first time the slot is sent (else None), ``released`` the worker's release record (per
    slot, the number of the last batch released from it) with its first batch (else None)."""

    worker: tuple[int, int]  # (pid, random) - unique for the worker process's lifetime
    slot: int
    number: int
    tree: Any
    storage: torch.UntypedStorage | None = None
    released: torch.Tensor | None = None


def slots_for(prefetch_factor: int, leased: bool = True) -> int:
    """Slots per worker so that a worker always finds its next slot released.

    With in-order delivery torch sends task ``s`` while it hands batch ``s - P*W`` to the
    main process (P = prefetch_factor, W = workers, tasks dealt round-robin). A worker's
    batch ``j`` is global task ``s``; its batch ``j - K``, the slot's last one, is task
    ``s - K*W``. Copied out (``leased`` False), every batch the main process received
    before is released: ``s - K*W < s - P*W`` needs ``K = P + 1``. Leased, the consumer of
    ``for batch in loader`` still holds batch ``s - P*W - 1`` while it asks for the next,
    and has dropped every batch before it: ``s - K*W < s - P*W - 1`` needs ``K = P + 2``.
    (A worker left alone at the end of an IterableDataset may get more of the window, a
    consumer may keep batches: the worker then takes fresh slots, see the module doc.)"""
    return int(prefetch_factor) + (2 if leased else 1)


def _nbytes_upper(obj: Any) -> int:
    """Slot bytes a sample's entries take once collated (with alignment, an upper bound)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size() + ALIGN
    if isinstance(obj, PendingVideo):
        return obj.nbytes + ALIGN
    if isinstance(obj, (bool, int, float)):
        return 8 + ALIGN
    if isinstance(obj, Mapping):
        return sum(_nbytes_upper(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes_upper(v) for v in obj)
    return 0


def memory_order(t: torch.Tensor) -> list[int]:
    """``t``'s dims from the outermost to the innermost in memory, when ``t`` is dense (a
    permutation of a contiguous tensor, e.g. channels-last); else the plain order."""
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    return order if t.permute(order).is_contiguous() else list(range(t.dim()))


class _Arena:
    """Bump allocation of dense tensors inside one slot storage."""

    def __init__(self, storage: torch.UntypedStorage) -> None:
        self.storage, self.used = storage, 0

    def take(self, dtype: torch.dtype, shape: tuple[int, ...],
             order: list[int] | None = None) -> torch.Tensor | None:
        """A new tensor in the slot's free space (None when it does not fit), laid out in
        memory ``order`` (outermost dim first; default contiguous)."""
        nbytes = math.prod(shape) * dtype.itemsize
        start = -(-self.used // ALIGN) * ALIGN
        if start + nbytes > self.storage.nbytes():
            return None
        self.used = start + nbytes
        order = list(range(len(shape))) if order is None else order
        base = _view(self.storage, InSlot(start, dtype, tuple(shape[d] for d in order)))
        return base.permute(sorted(range(len(order)), key=order.__getitem__))

    def place(self, t: torch.Tensor) -> InSlot | torch.Tensor:
        """``t``'s place in the slot (copied there, in its own memory order, unless it
        already is), or ``t`` itself when it does not fit or is not a plain CPU tensor."""
        if t.device.type != "cpu" or t.layout != torch.strided or t.is_nested:
            return t
        order = memory_order(t)
        if (t.untyped_storage().data_ptr() != self.storage.data_ptr()
                or not t.permute(order).is_contiguous()):
            out = self.take(t.dtype, tuple(t.shape), order)
            if out is None:
                return t
            t = out.copy_(t)
        strides = None if t.is_contiguous() else tuple(t.stride())
        return InSlot(t.storage_offset() * t.element_size(), t.dtype, tuple(t.shape), strides)


def _view(storage: torch.UntypedStorage, place: InSlot) -> torch.Tensor:
    """The tensor at ``place`` in ``storage`` (no copy)."""
    view = torch.empty(0, dtype=place.dtype)
    if place.strides is None:
        return view.set_(storage, place.offset // place.dtype.itemsize, place.shape)
    return view.set_(storage, place.offset // place.dtype.itemsize, place.shape, place.strides)


class SlotCollate:
    """The DataLoader ``collate_fn`` of the worker side (collates as store.jpeg.collate).

    Holds per-process state, created in the worker on its first batch: the slots, the
    release counter and how many batches this worker has sent. In the main process
    (``num_workers=0``) it is just store.jpeg.collate."""

    def __init__(self, slots: int) -> None:
        self.slots = int(slots)
        self._pid: int | None = None

    def _start(self) -> None:
        self._pid = os.getpid()
        self._worker = (self._pid, int.from_bytes(os.urandom(8), "little"))
        self._storages: list[torch.UntypedStorage | None] = [None] * self.slots
        self._unsent = [True] * self.slots
        self._released = torch.full((self.slots,), -1, dtype=torch.int64).share_memory_()
        self._sent_record = False
        self._made = 0  # batches sent by this worker

    def __call__(self, samples: list[dict[str, Any]]) -> SlotBatch | dict[str, Any]:
        if get_worker_info() is None:
            return collate(samples)
        if self._pid != os.getpid():
            self._start()
        j, k = self._made, self._made % self.slots
        arena = _Arena(self._slot(k, j, sum(_nbytes_upper(s) for s in samples)))
        ragged = {key: [s.pop(key) for s in samples] for key in RAGGED_KEYS if key in samples[0]}

        def stack(batch: list[torch.Tensor], *, collate_fn_map: Any = None) -> torch.Tensor:
            elem = batch[0]
            out = None
            if elem.device.type == "cpu" and elem.layout == torch.strided and not elem.is_nested:
                # the samples' own memory order (channels-last video stays so: no transpose)
                order = [0, *(1 + d for d in memory_order(elem))]
                out = arena.take(elem.dtype, (len(batch), *elem.shape), order)
            if out is None:
                return collate_tensor_fn(batch)  # torch's way (fresh shared memory)
            return torch.stack(batch, 0, out=out)

        def render(batch: list[PendingVideo], *, collate_fn_map: Any = None) -> torch.Tensor:
            return render_batch(batch, lambda shape, order: arena.take(torch.uint8, shape, order))

        batch = torch_collate(samples, collate_fn_map={
            **default_collate_fn_map, torch.Tensor: stack, PendingVideo: render})
        batch.update(ragged)
        msg = SlotBatch(self._worker, k, j, _tree_map(batch, torch.Tensor, arena.place))
        if self._unsent[k]:
            msg.storage, self._unsent[k] = self._storages[k], False
        if not self._sent_record:
            msg.released, self._sent_record = self._released, True
        self._made += 1
        return msg

    def _slot(self, k: int, j: int, nbytes: int) -> torch.UntypedStorage:
        """Slot ``k`` for this worker's batch ``j``: the same storage when batch ``j - K``
        was released and it is big enough, else a fresh one (sent with the batch)."""
        storage = self._storages[k]
        if storage is not None and int(self._released[k]) != j - self.slots:
            storage = None  # still held in the main process: never overwrite it
        if storage is None or storage.nbytes() < nbytes:
            size = -(-nbytes // 4096) * 4096
            storage = torch.empty(size, dtype=torch.uint8).share_memory_().untyped_storage()
            self._storages[k], self._unsent[k] = storage, True
        return storage


def _tree_map(obj: Any, leaf: type | tuple[type, ...], fn: Any) -> Any:
    """``obj`` with every ``leaf`` x in its dicts, lists and tuples replaced by fn(x)."""
    if isinstance(obj, leaf):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _tree_map(v, leaf, fn) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_tree_map(v, leaf, fn) for v in obj]
    if isinstance(obj, tuple):
        items = [_tree_map(v, leaf, fn) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    return obj


class BatchRing:
    """The main-process side for one DataLoader iteration: keeps every worker's slots
    mapped (strong references) and turns each :class:`SlotBatch` into an ordinary batch:
    the slot itself, leased until the batch is freed, or (``copy``) a copy, pinned with
    ``pin_memory``."""

    def __init__(self, copy: bool = False, pin_memory: bool = False) -> None:
        self.copy, self.pin_memory = bool(copy or pin_memory), bool(pin_memory)
        self.storages: dict[tuple[tuple[int, int], int], torch.UntypedStorage] = {}
        self.released: dict[tuple[int, int], torch.Tensor] = {}
        self.mapped = 0  # slot storages received (mapped) so far

    def receive(self, msg: SlotBatch | Any) -> Any:
        """The batch: views of its slot, released to the worker once the batch is freed; or
        (``copy``) copies, pinned with ``pin_memory``, the slot released at once."""
        if not isinstance(msg, SlotBatch):
            return msg
        key = (msg.worker, msg.slot)
        if msg.storage is not None:
            self.storages[key] = msg.storage  # replaces (unmaps) an outgrown slot
            self.mapped += 1
        if msg.released is not None:
            self.released[msg.worker] = msg.released
        storage, record = self.storages[key], self.released[msg.worker]
        leased: list[torch.UntypedStorage] = []  # the lease's storage, made on first use

        def hand_over(place: InSlot) -> torch.Tensor:
            rows = place.shape[0] if place.shape else 1  # stacked: one row per sample
            per_sample = math.prod(place.shape) * place.dtype.itemsize // max(1, rows)
            if not self.copy and per_sample >= LEASE_MIN_BYTES:
                if not leased:
                    lease = _Lease(storage)
                    weakref.finalize(lease, _release, record, msg.slot, msg.number)
                    leased.append(torch.from_numpy(np.asarray(lease)).untyped_storage())
                return _view(leased[0], place)
            src = _view(storage, place)  # the copy keeps its memory order: a plain memcpy
            out = torch.empty_strided(place.shape, src.stride(), dtype=place.dtype,
                                      pin_memory=self.pin_memory)
            return out.copy_(src)

        batch = _tree_map(msg.tree, InSlot, hand_over)
        if not leased:  # all copied: the copies are complete before the worker may reuse
            # the slot (copy_ is synchronous, and freeing the temporary slot views - an
            # acq_rel atomic in c10 - orders its loads before the record's store on weakly
            # ordered CPUs too)
            _release(record, msg.slot, msg.number)
        if self.pin_memory:
            batch = pin_tree(batch)  # what did not fit in the slot, as torch's pin thread would
        return batch


class _Lease:
    """One batch's hold on its slot: the buffer (numpy's array interface) its tensors view.
    numpy and torch keep it alive as long as any of them lives; then it is freed and
    ``weakref.finalize`` releases the slot (c10 frees the storage with an acq_rel atomic,
    so the consumer's reads are done before the release is seen, on any CPU)."""

    def __init__(self, storage: torch.UntypedStorage) -> None:
        self.storage = storage  # keeps the slot mapped while the batch lives
        self.__array_interface__ = {"shape": (storage.nbytes(),), "typestr": "|u1",
                                    "data": (storage.data_ptr(), False), "version": 3}


def _release(record: torch.Tensor, slot: int, number: int) -> None:
    """Tells the worker that its batch ``number`` (in ``slot``) is no longer read. A late
    release of a batch whose slot was since replaced only makes the worker take a fresh
    storage once more: the worker reuses a slot only when the record names its last batch."""
    record[slot] = number


def accelerator_available() -> bool:
    acc = getattr(torch, "accelerator", None)
    if acc is not None:
        return bool(acc.is_available())
    return torch.cuda.is_available()


class WorkerStart:
    """A ring worker's ``worker_init_fn``: uint8 video views leave rendering to the collate
    (:class:`SlotCollate` renders each sample into the slot), then the caller's own init."""

    def __init__(self, then: Any = None) -> None:
        self.then = then

    def __call__(self, worker_id: int) -> None:
        render_in_collate()
        if self.then is not None:
            self.then(worker_id)


class RingLoader:
    """A torch DataLoader whose workers hand batches over through :class:`BatchRing` slots.

    Takes the DataLoader's arguments; ``collate_fn`` is store.jpeg.collate (the ring
    collates the same way). Batches are the workers' slots, leased until freed (no copy);
    ``pin_memory`` (only where an accelerator exists, as torch does) copies them into pinned
    memory in the main process instead, without a pin thread; ``copy`` copies them without
    pinning. With ``num_workers=0`` it is the plain DataLoader. ``in_order`` must stay True."""

    def __init__(self, dataset: Any, batch_size: int | None = 1, num_workers: int = 0,
                 pin_memory: bool = False, prefetch_factor: int | None = None,
                 copy: bool = False, **loader_kw: Any) -> None:
        if loader_kw.pop("collate_fn", collate) is not collate:
            raise ValueError("RingLoader collates like store.jpeg.collate; use a plain "
                             "DataLoader for another collate_fn")
        if loader_kw.get("in_order") is False:
            raise ValueError("the batch ring needs in-order delivery (in_order=True)")
        if batch_size is None:
            raise ValueError("the batch ring collates batches: give a batch_size or sampler")
        self.dataset, self.num_workers = dataset, int(num_workers)
        self.pin_memory = bool(pin_memory) and accelerator_available()
        self.copy = bool(copy) or self.pin_memory
        # persistent workers keep their slots across iterations, so the ring stays too
        self.persistent = bool(loader_kw.get("persistent_workers"))
        self.ring: BatchRing | None = None  # the current iteration's (None without workers)
        if self.num_workers == 0:
            self.loader = DataLoader(dataset, batch_size=batch_size, num_workers=0,
                                     collate_fn=collate, pin_memory=self.pin_memory, **loader_kw)
            return
        prefetch = 2 if prefetch_factor is None else int(prefetch_factor)
        self.slots = slots_for(prefetch, leased=not self.copy)
        init = WorkerStart(loader_kw.pop("worker_init_fn", None))
        self.loader = DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                                 collate_fn=SlotCollate(self.slots), pin_memory=False,
                                 prefetch_factor=prefetch, worker_init_fn=init, **loader_kw)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            yield from self.loader
            return
        if self.ring is None or not self.persistent:
            self.ring = BatchRing(self.copy, self.pin_memory)
        ring, batches = self.ring, iter(self.loader)
        try:
            for msg in batches:
                yield ring.receive(msg)
        finally:
            del batches  # shuts non-persistent workers down before their slots are unmapped
            if not self.persistent:
                ring.storages.clear()
