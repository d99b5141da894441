"""Video left to the collate, which renders each sample straight into its place in the batch.

A loader worker that renders a sample's uint8 video (store/views/video.py) and then stacks
the samples copies every pixel twice: the resize writes the sample, the stack copies it
into the batch. The batch ring's workers (store/batch_ring.py) collate into a reused
shared-memory slot, so they can skip the second copy: in a process where
:func:`render_in_collate` was called (the ring's worker start does it), a CPU video view with
``pixels="uint8"`` returns a :class:`PendingVideo` - the clip's needed JPEG frames and the
view's plan, drawn from the same generator at the same point as before - and the collate
decodes, crops and resizes each sample into the slot (:func:`render_batch`). Decoding at
collate time keeps each sample's decoded frames in cache for its resize. Everywhere else
(the main process, a plain DataLoader's workers, iterating a dataset by hand) a view makes
the same :class:`PendingVideo` and renders it at once into a fresh tensor: one code path,
so the pixels are the same; only where they are written differs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from store.jpeg import decode_clip_frames
from store.views.crop import Box
from store.views.render import crop_resize, normalize_pixels

_render_in_collate = False  # per process: set in the batch ring's workers only


def render_in_collate(on: bool = True) -> None:
    """From now on, uint8 CPU video views of this process leave rendering to the collate
    (call it only where the collate is the batch ring's, which renders them)."""
    global _render_in_collate
    _render_in_collate = bool(on)


def renders_in_collate() -> bool:
    """Whether this process's uint8 CPU video views leave rendering to the collate."""
    return _render_in_collate


@dataclass
class PendingVideo:
    """One sample's uint8 video before rendering: the clip, the JPEG bytes of the unique
    frames the plan needs (none for a clip without video: zeros), the crop box, output size
    and flip, and ``order``, how the rendered frames index into the output of ``shape``."""

    clip_id: str
    jpegs: list[bytes]
    box: Box
    size: int
    flip: bool
    order: torch.Tensor
    shape: tuple[int, ...]  # the view's out_shape(): [..., 3, size, size]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape)

    def render(self, out: torch.Tensor) -> torch.Tensor:
        """Decode, crop and resize into ``out`` (uint8 of ``shape``, any memory order)."""
        if tuple(out.shape) != self.shape or out.dtype != torch.uint8:
            raise ValueError(f"cannot render video of shape {self.shape} into "
                             f"{out.dtype} {tuple(out.shape)}")
        if not self.jpegs:
            return out.zero_()  # a clip without video: the zeros the view gives
        frames = decode_clip_frames(self.jpegs, self.clip_id)
        if self._in_order(len(frames)):
            rows = out if self.order.dim() else out.unsqueeze(0)  # a single frame: [1, ...]
            crop_resize(frames, self.box, self.size, self.flip, out=rows)
            return out
        return gather(crop_resize(frames, self.box, self.size, self.flip), self.order, out)

    def render_normalized(self, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """float32 [shape] ImageNet-normalised (the view's float pixels): the unique frames
        rendered and normalised, then indexed, so each frame is normalised once."""
        frames = decode_clip_frames(self.jpegs, self.clip_id)
        pixels = normalize_pixels(crop_resize(frames, self.box, self.size, self.flip), mean, std)
        if self._in_order(len(frames)):
            return pixels if self.order.dim() else pixels[0]
        order = channels_last_order(len(self.shape))
        return gather(pixels, self.order, empty_in_order(self.shape, order, pixels.dtype))

    def _in_order(self, n: int) -> bool:
        """Whether the output is the ``n`` rendered frames once each, in order (one window
        of distinct frames, or a single frame): no gather."""
        return (self.order.dim() == 0 and n == 1) or (
            self.order.dim() == 1 and torch.equal(self.order, torch.arange(n)))


def gather(frames: torch.Tensor, order: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` = ``frames[order]`` (frames used more than once: overlapping eval windows,
    short clips), with index_select into ``out``'s rows: advanced indexing of channels-last
    frames took 13 ms for the 10-clip view's 80 frames, this 0.5 ms."""
    index = order.flatten()
    try:
        rows = out.view(-1, *frames.shape[1:])  # [K * T, 3, size, size]
    except RuntimeError:  # leading dims not flat in memory: gather, then copy
        return out.copy_(frames.index_select(0, index).view(out.shape))
    torch.index_select(frames, 0, index, out=rows)
    return out


def channels_last_order(ndim: int) -> list[int]:
    """Memory order (outermost dim first) of a [..., 3, H, W] tensor with channels innermost,
    the order crop_resize gives (store.views.render.blank_pixels)."""
    return [*range(ndim - 3), ndim - 2, ndim - 1, ndim - 3]


def empty_in_order(shape: tuple[int, ...], order: list[int],
                   dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` laid out in memory ``order``."""
    base = torch.empty([shape[d] for d in order], dtype=dtype)
    return base.permute(sorted(range(len(order)), key=order.__getitem__))


def render_batch(
    videos: list[PendingVideo],
    take: Callable[[tuple[int, ...], list[int]], torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """The batch's uint8 video [B, ...], each sample rendered into its row of a tensor from
    ``take(shape, memory order)`` (the batch ring's slot) or, where that gives None, of a
    fresh one; channels innermost, as stacking rendered samples gives."""
    shape = videos[0].shape
    if any(v.shape != shape for v in videos):
        raise ValueError("videos of one batch must have one shape, got "
                         f"{sorted({v.shape for v in videos})}")
    full, order = (len(videos), *shape), channels_last_order(1 + len(shape))
    out = take(full, order) if take is not None else None
    if out is None:
        out = empty_in_order(full, order)
    for row, video in zip(out, videos, strict=True):
        video.render(row)
    return out
