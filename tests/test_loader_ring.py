"""The batch ring (store/batch_ring.py): batches equal a plain DataLoader's, leased slots are
reused once freed and never overwritten while any part of a batch lives (copies, when asked,
are real), shutdown is prompt, and the trainer's loaders go through it."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

import pytest
import torch
from loader_fixtures import zarr_store  # noqa: F401
from torch.utils.data import DataLoader, Dataset

from store import batch_ring
from store.batch_ring import RingLoader, SlotBatch, SlotCollate, slots_for
from store.datasets import ResumableLoader, StreamingDataset
from store.jpeg import collate
from store.views import make_view

torch.set_num_threads(1)


def assert_same_batches(plain: list[Any], ring: list[Any]) -> None:
    """Same keys, types, dtypes, shapes and values, everywhere in the batch trees."""
    assert len(plain) == len(ring)
    for a, b in zip(plain, ring, strict=True):
        assert_same(a, b)


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


class Growing(Dataset):
    """Samples shaped like the store's (uint8 video, float32 audio, ids, flags, a ragged
    list), whose size grows every ``grow_every`` items, so later batches outgrow the slots."""

    def __init__(self, n: int, grow_every: int = 1000) -> None:
        self.n, self.grow_every = n, grow_every

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        g = torch.Generator().manual_seed(i)
        side = 8 * (1 + i // self.grow_every)
        return {
            "clip_id": f"clip-{i}",
            "audio": torch.randn(1, 16, 8, generator=g),
            "video": torch.randint(0, 256, (2, 3, side, side), dtype=torch.uint8, generator=g),
            "label": torch.rand(5, generator=g) > 0.5,
            "has_audio": bool(i % 2),
            "mix_lambda": 0.25 * i,
            "index": i,
            "jpeg": [torch.randint(0, 256, (10 + i,), dtype=torch.uint8, generator=g)],
            "video_plan": [{"order": torch.arange(i % 3), "flip": i % 2 == 0,
                            "step": torch.tensor(i)}],  # a 0-dim tensor in a ragged entry
        }


@pytest.fixture
def small_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lease Growing's tiny audio and video (>= 256 bytes per sample) as the store's big ones
    are (its labels, flags and indices stay copied: under the threshold)."""
    monkeypatch.setattr(batch_ring, "LEASE_MIN_BYTES", 256)


def _copied(batch: Any) -> Any:
    """``batch`` with every tensor cloned (a consumer that keeps what it read, not the lease)."""
    return batch_ring._tree_map(batch, torch.Tensor, torch.clone)


def _in_slot(t: torch.Tensor, slots: list[torch.UntypedStorage]) -> bool:
    """Whether ``t``'s memory lies inside one of ``slots``."""
    ptr = t.untyped_storage().data_ptr()
    return any(s.data_ptr() <= ptr < s.data_ptr() + s.nbytes() for s in slots)


def _children_gone(timeout: float, keep: frozenset = frozenset()) -> bool:
    """Whether this process's multiprocessing children (but ``keep``) end within timeout."""
    deadline = time.monotonic() + timeout
    while set(mp.active_children()) - keep:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_store_batches_through_the_ring_equal_a_plain_dataloader(
    zarr_store: str, workers: int, decode: str  # noqa: F811
) -> None:
    """Real store, MAViL pre-training view (uint8 video; decode="gpu": the GPU path's
    ragged JPEG lists and crop plans); batch 5 over 12 clips, so the last batch is short."""
    view = make_view("mavil_pretrain", pixels="uint8", decode=decode)

    def dataset() -> StreamingDataset:
        return StreamingDataset(zarr_store, view, seed=3, batch_size=5)

    plain = list(DataLoader(dataset(), batch_size=5, num_workers=workers, collate_fn=collate))
    loader = ResumableLoader(dataset(), batch_size=5, num_workers=workers)
    ring = []
    for batch in loader:  # the store's audio and video are leased, its labels copied
        slots = list(loader.loader.ring.storages.values())
        assert _in_slot(batch["audio"], slots) and not _in_slot(batch["label"], slots)
        if decode == "cpu":  # (the GPU path sends JPEG bytes: small, copied)
            assert _in_slot(batch["video"], slots)
        ring.append(batch)
    assert [len(b["index"]) for b in ring] == [5, 5, 2]
    assert isinstance(loader.loader, RingLoader) and loader.loader.ring is not None
    assert_same_batches(plain, ring)
    if decode == "gpu":
        assert isinstance(ring[0]["jpeg"][0][0], torch.Tensor)
    else:  # the samples' channels-last video stays so through the ring: no transposition
        video = ring[0]["video"]  # [B, T, 3, H, W], channels innermost in memory
        assert video.stride()[2] == 1 and video.permute(0, 1, 3, 4, 2).is_contiguous()
        assert plain[0]["video"].is_contiguous()  # torch's collate transposes as it stacks


@pytest.mark.parametrize("strided", ["channels_last", "transposed", "gapped"])
def test_slots_keep_a_dense_memory_order_and_copy_the_rest(strided: str) -> None:
    """Dense tensors in any memory order travel as they are (a memcpy, strides kept); a
    tensor with gaps (not dense) is made contiguous; values always equal torch's collate."""

    class Strided(Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict[str, Any]:
            g = torch.Generator().manual_seed(i)
            x = torch.randint(0, 256, (2, 6, 5, 3), dtype=torch.uint8, generator=g)
            x = {"channels_last": x.permute(0, 3, 1, 2), "transposed": x.transpose(1, 2),
                 "gapped": x[:, ::2]}[strided]
            return {"video": x, "index": i}

    ring = list(RingLoader(Strided(), batch_size=4, num_workers=1))
    assert_same_batches(list(DataLoader(Strided(), batch_size=4, collate_fn=collate)), ring)
    sample, video = Strided()[0]["video"], ring[0]["video"]
    if strided == "gapped":
        assert video.is_contiguous()
    else:
        assert video.stride()[1:] == sample.stride()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("copy", [False, True])
def test_outgrown_slots_uneven_batches_and_kept_batches(workers: int, copy: bool,
                                                        small_leases: None) -> None:
    """Batches get bigger than the slots (every 6 items the video doubles), the last batch
    is short, and a consumer keeping every batch sees distinct, correct batches: its leases
    are never overwritten (the workers take fresh slots), or its copies are its own."""
    ds = Growing(29, grow_every=6)
    plain = list(DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=collate))
    loader = RingLoader(ds, batch_size=3, num_workers=workers, copy=copy)
    ring = list(loader)  # keeps every batch alive
    assert [len(b["index"]) for b in ring][-1] == 2
    assert_same_batches(plain, ring)
    if copy:
        assert loader.ring.mapped > workers * slots_for(2, leased=False)  # outgrown slots
    else:
        assert loader.ring.mapped == len(ring)  # every kept lease held its slot to the end
    ptrs = [b["video"].untyped_storage().data_ptr() for b in ring]
    assert len(set(ptrs)) == len(ring)  # every kept batch has memory of its own
    assert not any(b["video"].is_shared() for b in ring)  # leases and copies alike


@pytest.mark.parametrize("copy", [False, True])
def test_slots_stay_mapped_and_are_reused(copy: bool, small_leases: None) -> None:
    """40 batches from 2 workers, each dropped before the next (``for batch in loader``):
    the main process maps each worker's K slots once (the same storages, same addresses,
    batch after batch); each batch's audio and video are its slot (leased: no copy) or
    fresh copies, its small tensors copies."""
    workers, k = 2, slots_for(2, leased=not copy)
    loader = RingLoader(Growing(120), batch_size=3, num_workers=workers, copy=copy)
    first: dict[Any, int] = {}
    seen_batches = 0
    for batch in loader:
        seen_batches += 1
        for key, storage in loader.ring.storages.items():
            first.setdefault(key, storage.data_ptr())
            assert storage.data_ptr() == first[key]  # the mapping is reused
        slots = list(loader.ring.storages.values())
        assert all(_in_slot(batch[key], slots) != copy for key in ("video", "audio"))
        assert not any(_in_slot(batch[key], slots) for key in ("label", "index"))
    assert seen_batches == 40
    assert len(first) == workers * k
    assert loader.ring.mapped == workers * k  # 40 batches, 8 (copies: 6) mappings in all


def test_a_lease_lives_as_long_as_any_view_of_it(small_leases: None) -> None:
    """A consumer keeps a slice of one early batch, a view of another and the labels of
    every batch: those two slots' storages are never reused while the views live (the
    workers take one fresh storage for each, reused from then on), the labels (copies) hold
    no slot, and all that is kept keeps its values to the end."""
    ds = Growing(90)
    plain = list(DataLoader(ds, batch_size=3, collate_fn=collate))
    loader = RingLoader(ds, batch_size=3, num_workers=1)
    kept: dict[int, torch.Tensor] = {}
    labels = []
    for i, batch in enumerate(loader):
        assert_same(plain[i], batch)
        labels.append(batch["label"])
        if i == 1:
            kept[i] = batch["video"][1:]  # a slice keeps the whole lease
        if i == 2:
            kept[i] = batch["audio"].view(3, -1)
    assert torch.equal(kept[1], plain[1]["video"][1:])
    assert torch.equal(kept[2].view(3, 1, 16, 8), plain[2]["audio"])
    assert all(torch.equal(a, b["label"]) for a, b in zip(labels, plain, strict=True))
    assert loader.ring.mapped == slots_for(2) + 2  # 30 batches


def test_abandoned_iterator_shuts_down_promptly() -> None:
    others = frozenset(mp.active_children())  # e.g. servers of other tests' fixtures
    loader = RingLoader(Growing(10_000), batch_size=4, num_workers=2)
    it = iter(loader)
    for _ in range(3):
        next(it)
    t0 = time.monotonic()
    del it
    assert _children_gone(20, others), "DataLoader workers alive 20 s after the iterator"
    assert time.monotonic() - t0 < 20


def test_a_worker_never_overwrites_an_unreleased_slot(monkeypatch: pytest.MonkeyPatch,
                                                     small_leases: None) -> None:
    """The worker side alone (as if in a worker) with 2 slots, leases freed out of order:
    a slot whose batch is still held gets a fresh storage at once (no wait, no overwrite),
    a freed one is reused, and a late release of a batch whose slot was since replaced
    does not free the batch that replaced it."""
    monkeypatch.setattr(batch_ring, "get_worker_info", lambda: object())
    ds = Growing(20)
    coll, ring = SlotCollate(slots=2), batch_ring.BatchRing()

    def pair(i: int) -> list[dict[str, Any]]:
        return [ds[2 * i], ds[2 * i + 1]]

    msgs: list[SlotBatch] = [coll(pair(i)) for i in (0, 1)]
    assert all(m.storage is not None for m in msgs)
    assert msgs[0].released is not None and msgs[1].released is None
    record = msgs[0].released
    got = {i: ring.receive(m) for i, m in enumerate(msgs)}
    t0 = time.monotonic()
    third = coll(pair(2))  # slot 0 again, but batch 0 is held
    assert time.monotonic() - t0 < 5
    assert third.storage is not None and third.storage.data_ptr() != msgs[0].storage.data_ptr()
    got[2] = ring.receive(third)
    del got[1]  # freed before batch 0: out of order
    assert record.tolist() == [-1, 1]
    fourth = coll(pair(3))  # slot 1: reused, not resent
    assert fourth.storage is None
    got[3] = ring.receive(fourth)
    del got[0]  # late: slot 0 holds batch 2 (in a fresh storage) by now
    assert record.tolist() == [0, 1]
    fifth = coll(pair(4))  # slot 0: batch 2 is held, so a fresh storage again
    assert fifth.storage is not None
    got[4] = ring.receive(fifth)
    for i, batch in got.items():  # what is held kept its values
        assert_same(batch, collate(pair(i)))
    ring.copy = True  # copying: released as received
    assert_same(ring.receive(coll(pair(5))), collate(pair(5)))  # slot 1, batch 3 held:
    assert record.tolist() == [0, 5]  # fresh, copied out and released at once
    assert coll(pair(6)).storage is not None  # slot 0: batch 4 is still held


def test_no_workers_is_the_plain_dataloader(zarr_store: str) -> None:  # noqa: F811
    loader = RingLoader(Growing(7), batch_size=3, num_workers=0, pin_memory=True)
    assert isinstance(loader.loader, DataLoader) and loader.loader.collate_fn is collate
    assert_same_batches(list(DataLoader(Growing(7), batch_size=3, collate_fn=collate)),
                        list(loader))
    view = make_view("mavil_pretrain", pixels="uint8")
    resumable = ResumableLoader(StreamingDataset(zarr_store, view, batch_size=4), 4)
    assert resumable.loader.loader.num_workers == 0
    with pytest.raises(ValueError, match="in-order"):
        RingLoader(Growing(7), num_workers=2, in_order=False)


def test_pin_memory_pins_only_with_an_accelerator() -> None:
    loader = RingLoader(Growing(12), batch_size=3, num_workers=1, pin_memory=True)
    batches = list(loader)
    assert loader.loader.pin_memory is False  # the copy out of the slot pins, no pin thread
    pinned = batch_ring.accelerator_available()
    assert all(b["video"].is_pinned() == pinned for b in batches)
    assert all(b["jpeg"][0][0].is_pinned() == pinned for b in batches)


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_the_trainer_loaders_go_through_the_ring(zarr_store: str, kind: str) -> None:  # noqa: F811
    """train.data.build_loader with 2 workers: batches come through the ring (leased slots,
    not the fresh shared memory of a plain DataLoader's workers) and equal the
    0-worker batches (the sequence is a pure function of the seed); the resume point after
    two batches is the same too."""
    from omegaconf import OmegaConf

    from store import open_store
    from train.config import Config
    from train.data import build_loader

    cfg = OmegaConf.structured(Config)
    cfg.data.store, cfg.data.batch_size, cfg.data.loader = zarr_store, 3, kind
    cfg.model.inputs = ["audio", "video"]
    store = open_store(zarr_store)
    runs = {}
    for workers in (0, 2):
        cfg.data.num_workers = workers
        loader = build_loader(cfg, store, 0, 1, None)
        loader.set_epoch(1)
        batches = []
        for batch in loader:
            batches.append(batch)
            if len(batches) == 2:
                state = loader.state_dict()
        runs[workers] = (batches, state)
        # a plain DataLoader's worker batches live in fresh shared memory; the ring's
        # are leases of its slots (or copies, with an accelerator)
        assert not any(b["video"].is_shared() for b in batches)
    assert_same_batches(runs[0][0], runs[2][0])
    assert runs[0][1] == runs[2][1] and runs[2][1]["consumed"] == 6


def test_persistent_workers_keep_their_slots_across_epochs() -> None:
    loader = RingLoader(Growing(30), batch_size=4, num_workers=2, persistent_workers=True)
    first, second = ([_copied(b) for b in loader] for _ in range(2))
    assert_same_batches(first, second)
    assert loader.ring.mapped == 2 * slots_for(2)  # the second epoch mapped nothing new
