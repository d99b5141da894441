"""Frames -> model pixels: crop a box, resize, flip (uint8), then ImageNet-normalise (float32).

The one place both decode paths (CPU libjpeg-turbo, GPU nvJPEG) finish a video view, so the
two paths give the same pixels for the same plan. The two halves are separate so a loader
worker can stop at uint8 (:func:`crop_resize`, 4x fewer bytes to ship between processes) and
the trainer normalises on its device (:func:`normalize_pixels`); ``render_frames`` is both.
Resizing happens on uint8 either way, so both routes give the same float32 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF

from store.views.crop import Box

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_resize(
    frames: torch.Tensor | Sequence[torch.Tensor], box: Box, size: int = 224, flip: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 frames ([T, 3, H, W] or a list of [3, H, W]) -> uint8 [T, 3, size, size]: crop
    ``box``, bilinear resize (antialiased, as torchvision's RandomResizedCrop on tensors),
    optional horizontal flip. The same box and flip apply to every frame of the clip.

    A list (what the JPEG decoders return) is cropped before it is stacked, so only the box's
    pixels are copied; libjpeg-turbo's [3, H, W] outputs are channels-last views, and stacking
    their boxes channels-last feeds the resize without another layout change. The result
    stays channels-last in memory (strides, not values): making it contiguous here cost 0.45
    ms of a worker's ~2.7 ms per sample (2-core dev VM). The batch ring keeps that order
    through to the main process (store/batch_ring.py), and on the device the video patch
    embedding's Conv3d reads it as channels_last_3d; a plain torch collate makes it
    contiguous as it stacks.

    ``out`` (uint8 [T, 3, size, size], any memory order): the pixels are written there, by
    the same resize and flip kernels TF.resize and Tensor.flip run, so the values are the
    same; a collate renders each sample straight into its place in the batch this way
    (store/views/deferred.py), saving the copy of stacking rendered samples."""
    top, left, h, w = box
    if isinstance(frames, torch.Tensor):
        crop = frames[..., top : top + h, left : left + w]
    else:
        crop = torch.stack([f.permute(1, 2, 0)[top : top + h, left : left + w] for f in frames])
        crop = crop.permute(0, 3, 1, 2)  # [T, 3, h, w], channels-last in memory
    if out is None:
        resized = TF.resize(crop, [size, size], antialias=True)
        return resized.flip(-1) if flip else resized
    if (h, w) == (size, size):
        resized = crop  # TF.resize leaves a crop of the output size as it is
    elif flip:
        resized = TF.resize(crop, [size, size], antialias=True)
    else:  # TF.resize's kernel for uint8 on the CPU (interpolate, antialiased bilinear)
        return torch.ops.aten._upsample_bilinear2d_aa.out(crop, [size, size], False, out=out)
    if flip:
        return torch.ops.aten.flip.out(resized, [-1], out=out)
    return out.copy_(resized)


def blank_pixels(shape: Sequence[int], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Zeros of ``shape`` ([..., 3, H, W]) in the memory order :func:`crop_resize` gives
    (channels innermost), so that a batch's samples share one layout with or without video."""
    *lead, c, h, w = shape
    return torch.zeros(*lead, h, w, c, dtype=dtype).movedim(-1, -3)


def normalize_pixels(
    video: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 (x / 255 - mean) / std, on the tensor's device."""
    # as one multiply-add: x * (1 / (255 std)) + (-mean / std)
    shape = (3, 1, 1)
    scale = torch.tensor([1.0 / (255.0 * v) for v in std], device=video.device).view(shape)
    bias = torch.tensor([-m / v for m, v in zip(mean, std, strict=True)], device=video.device)
    return torch.addcmul(bias.view(shape), video.to(torch.float32), scale)


def render_frames(
    frames: torch.Tensor | Sequence[torch.Tensor],
    box: Box,
    size: int = 224,
    flip: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 frames -> float32 [T, 3, size, size]: :func:`crop_resize`, then
    :func:`normalize_pixels`."""
    return normalize_pixels(crop_resize(frames, box, size, flip), mean, std)
