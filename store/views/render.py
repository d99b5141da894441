"""Frames -> model pixels: crop a box, resize, flip, ImageNet-normalise (CPU or GPU tensors).

The one place both decode paths (CPU libjpeg-turbo, GPU nvJPEG) finish a video view, so the
two paths give the same pixels for the same plan.
"""

from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF

from store.views.crop import Box

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def render_frames(
    frames: torch.Tensor,
    box: Box,
    size: int = 224,
    flip: bool = False,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> float32 [T, 3, size, size]: crop ``box``, bilinear resize
    (antialiased, as torchvision's RandomResizedCrop on tensors), optional horizontal flip,
    then (x / 255 - mean) / std. The same box and flip apply to every frame of the clip."""
    top, left, h, w = box
    out = TF.resized_crop(frames, top, left, h, w, [size, size], antialias=True)
    if flip:
        out = out.flip(-1)
    # (x / 255 - mean) / std as one multiply-add: x * (1 / (255 std)) + (-mean / std)
    scale = torch.tensor([1.0 / (255.0 * v) for v in std], device=out.device).view(1, 3, 1, 1)
    bias = torch.tensor([-m / v for m, v in zip(mean, std, strict=True)], device=out.device)
    return torch.addcmul(bias.view(1, 3, 1, 1), out.to(torch.float32), scale)
