"""uint8 video rendered by the collate straight into the batch (store/views/deferred.py).

The batch ring's workers leave a uint8 view's rendering to the collate, which writes each
sample into its row of the slot. The pixels must be torchvision's (TF.resize, antialiased,
then Tensor.flip) whatever memory the result goes to, every video view must give the pixels
it gives when it renders itself (gathers, single frames and clips without video included),
and only the ring's workers may defer (the caller's own worker_init_fn still runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from loader_fixtures import zarr_store  # noqa: F401
from torch.utils.data import DataLoader, Dataset

from store.batch_ring import RingLoader
from store.datasets import ClipDataset
from store.jpeg import collate, decode_cpu
from store.views import make_view
from store.views.deferred import (
    PendingVideo,
    channels_last_order,
    empty_in_order,
    render_batch,
    render_in_collate,
    renders_in_collate,
)
from store.views.render import crop_resize, normalize_pixels

torch.set_num_threads(1)


@pytest.fixture
def deferring() -> Iterator[None]:
    """This process defers, as a ring worker does, for the test only."""
    render_in_collate()
    try:
        yield
    finally:
        render_in_collate(False)


@pytest.mark.parametrize("frames", [1, 8])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_crop_resize_into_out_gives_torchvisions_pixels(frames: int, flip: bool,
                                                         layout: str) -> None:
    g = torch.Generator().manual_seed(frames + 2 * flip)
    size = 32
    for box in [(3, 5, 41, 57), (0, 0, 60, 80), (7, 9, 13, 21), (10, 11, 32, 32), (1, 2, 32, 70)]:
        # decoder-like frames: [3, H, W] views of [H, W, 3] memory
        frames_hwc = torch.randint(0, 256, (frames, 60, 80, 3), dtype=torch.uint8, generator=g)
        decoded = [f.permute(2, 0, 1) for f in frames_hwc]
        top, left, h, w = box
        crop = torch.stack(decoded)[..., top : top + h, left : left + w]
        want = crop if (h, w) == (size, size) else TF.resize(crop, [size, size], antialias=True)
        want = want.flip(-1) if flip else want
        shape = (frames, 3, size, size)
        out = (empty_in_order(shape, channels_last_order(4)) if layout == "channels_last"
               else torch.empty(shape, dtype=torch.uint8))
        strides = out.stride()
        got = crop_resize(decoded, box, size, flip, out=out)
        assert got.data_ptr() == out.data_ptr() and out.stride() == strides  # written in place
        assert torch.equal(out, want), box
        assert torch.equal(crop_resize(decoded, box, size, flip), want)  # the view's own way


def _torchvision_pixels(video: PendingVideo) -> torch.Tensor:
    """The pixels of ``video``'s plan the plain way: decode, stack, crop, TF.resize
    (antialiased), flip, index the frames; zeros without frames."""
    if not video.jpegs:
        return torch.zeros(video.shape, dtype=torch.uint8)
    top, left, h, w = video.box
    crop = torch.stack(decode_cpu(video.jpegs))[..., top : top + h, left : left + w]
    out = TF.resize(crop, [video.size, video.size], antialias=True)
    return (out.flip(-1) if video.flip else out)[video.order]


@pytest.mark.parametrize("name", ["mavil_pretrain", "mavil_eval", "mavil_eval10",
                                  "cavmae_train", "cavmae_eval"])
def test_views_render_torchvisions_pixels_at_once_and_in_the_collate(
    zarr_store: str, name: str, deferring: None  # noqa: F811
) -> None:
    """Each clip of the store (with and without video, short ones) through the view: its
    own rendering and the pending video rendered into a batch (fresh, or a caller's
    buffer) both equal torchvision's pixels for the view's plan."""
    view = make_view(name, labels=False, pixels="uint8")
    ds = ClipDataset(zarr_store, view, seed=5, deterministic=True)
    pending = [ds[i]["video"] for i in range(len(ds))]
    render_in_collate(False)
    eager = [ds[i]["video"] for i in range(len(ds))]  # the same plans (seeded per item)
    assert all(isinstance(p, PendingVideo) for p in pending)
    assert any(p.jpegs for p in pending) and any(not p.jpegs for p in pending)
    if name == "mavil_pretrain":  # both kinds of flip are in the batch
        assert {p.flip for p in pending if p.jpegs} == {False, True}
    want = torch.stack([_torchvision_pixels(p) for p in pending])
    assert all(isinstance(e, torch.Tensor) and e.stride()[-3] == 1 for e in eager)
    assert torch.equal(torch.stack(eager), want)
    got = render_batch(pending)
    assert got.shape == want.shape and got.dtype == torch.uint8
    assert torch.equal(got, want)
    assert got.stride()[-3] == 1  # channels innermost, as the rendered samples are
    # into a tensor the caller gives (the batch ring's slot)
    slot = torch.full((len(ds) * want[0].numel() + 64,), 7, dtype=torch.uint8)

    def take(shape: tuple[int, ...], order: list[int]) -> torch.Tensor:
        n = torch.Size(shape).numel()
        return slot[64 : 64 + n].view([shape[d] for d in order]).permute(
            sorted(range(len(order)), key=order.__getitem__))

    into = render_batch(pending, take)
    assert into.untyped_storage().data_ptr() == slot.untyped_storage().data_ptr()
    assert torch.equal(into, want)
    # the float view normalises the unique frames before indexing: the same values
    floats = ClipDataset(zarr_store, make_view(name, labels=False), seed=5, deterministic=True)
    with_video = [i for i, p in enumerate(pending) if p.jpegs]
    got_f = torch.stack([floats[i]["video"] for i in with_video])
    assert got_f.dtype == torch.float32
    assert torch.equal(got_f, normalize_pixels(want[with_video]))


def test_a_gather_into_memory_that_does_not_flatten_still_renders(zarr_store: str) -> None:  # noqa: F811
    """The 10-clip view's frames gathered into a destination whose leading dims are not
    flat in memory (the fallback copy) give the same pixels."""
    view = make_view("mavil_eval10", labels=False, pixels="uint8")
    ds = ClipDataset(zarr_store, view, seed=0)
    render_in_collate()
    try:
        video = next(v for v in (ds[i]["video"] for i in range(len(ds))) if v.jpegs)
    finally:
        render_in_collate(False)
    k, t, c, s_, _ = video.shape
    out = torch.empty(t, k, s_, s_, c, dtype=torch.uint8).permute(1, 0, 4, 2, 3)  # T outer
    assert torch.equal(video.render(out), _torchvision_pixels(video))


def test_a_pending_video_refuses_the_wrong_destination() -> None:
    video = PendingVideo("c0", [], (0, 0, 1, 1), 8, False, torch.zeros(()), (2, 3, 8, 8))
    with pytest.raises(ValueError, match="cannot render"):
        video.render(torch.empty(2, 3, 8, 9, dtype=torch.uint8))
    other = PendingVideo("c1", [], (0, 0, 1, 1), 8, False, torch.zeros(()), (3, 8, 8))
    with pytest.raises(ValueError, match="one shape"):
        render_batch([video, other])


def test_frames_that_do_not_decode_name_the_clip_on_both_paths(zarr_store: str) -> None:  # noqa: F811
    """Bytes that are no JPEG (the checksums pass only what was written, so this is a writer
    bug): the view rendering at once and the collate rendering later raise the same error."""
    view = make_view("mavil_pretrain", labels=False, pixels="uint8").video
    ds = ClipDataset(zarr_store, make_view("mavil_pretrain", pixels="uint8"), seed=0)
    clip = next(c for c in ds.read(range(len(ds))) if c.has_video)
    broken = replace(clip, frames=[b"no jpeg"] * len(clip.frames))
    g = torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match=f"clip '{clip.clip_id}'.*do not decode") as eager:
        view(broken, g)
    render_in_collate()
    try:
        pending = view(broken, g)["video"]
    finally:
        render_in_collate(False)
    with pytest.raises(RuntimeError, match=f"clip '{clip.clip_id}'.*do not decode") as late:
        render_batch([pending])
    assert str(late.value) == str(eager.value)


_INIT: list[int] = []  # the caller's worker_init_fn writes here, in each worker


def _caller_init(worker_id: int) -> None:
    _INIT.append(worker_id)


class _Flags(Dataset):
    """Samples that report, from the process making them, whether views defer there and
    which worker_init_fn calls ran."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"defers": torch.tensor(renders_in_collate()),
                "init": torch.tensor(_INIT[-1] if _INIT else -1)}


def test_only_the_rings_workers_defer_and_the_callers_init_runs() -> None:
    ring = list(RingLoader(_Flags(), batch_size=2, num_workers=2, worker_init_fn=_caller_init))
    assert all(bool(b["defers"].all()) for b in ring)
    assert sorted({int(i) for b in ring for i in b["init"]}) == [0, 1]
    assert not renders_in_collate() and not _INIT  # nothing leaks into this process
    for loader in (RingLoader(_Flags(), batch_size=2, num_workers=0),
                   DataLoader(_Flags(), batch_size=2, num_workers=2, collate_fn=collate)):
        assert not any(bool(b["defers"].any()) for b in loader)
