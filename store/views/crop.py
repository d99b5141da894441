"""Crop geometry for frames: multi-scale random resized crop (train) and centre crop (eval).

Boxes are (top, left, height, width) in stored-frame pixels, so they can be computed from
the index (height, width) alone, before any JPEG is decoded (the GPU decode path needs that).
"""

from __future__ import annotations

import math

import torch

Box = tuple[int, int, int, int]

# MAViL appendix "Data Preprocessing": multi-scale random crop, scale=(0.2, 1.0); the aspect
# ratio range is torchvision's RandomResizedCrop default (as in MAE-ST's video augmentation).
CROP_SCALE = (0.2, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def random_resized_crop_box(
    height: int,
    width: int,
    g: torch.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
) -> Box:
    """torchvision ``RandomResizedCrop.get_params`` semantics with an explicit generator.

    Same draws in the same order (10 tries of area / log-aspect, then position; central
    fallback), so a generator in the same state yields the same box as torchvision does
    with the global RNG in that state.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    log_lo, log_hi = float(log_ratio[0]), float(log_ratio[1])
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=g)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
            j = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_square_box(height: int, width: int) -> Box:
    """Eval crop: the central square of side min(H, W).

    Resizing it to 224x224 equals "resize the shorter side to 224, then centre-crop 224"
    (up to sub-pixel rounding of the crop offset); MAViL supplement B.1: centre crop at test.
    """
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side
