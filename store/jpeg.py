"""JPEG decode paths for stored frames: CPU (libjpeg-turbo) and batched GPU (nvJPEG).

CPU: :func:`decode_cpu` decodes only the frames a view needs, inside the loader worker.
GPU: build the dataset with ``decode="gpu"``; samples then carry the needed frames as JPEG
byte tensors plus the crop plan, :func:`collate` keeps them as lists, and
:func:`finish_video_on_gpu` (call it in the training loop, on the batch) decodes the whole
batch in one ``torchvision.io.decode_jpeg(list, device="cuda")`` call and renders it with
the same :func:`store.views.render.render_frames` the CPU path uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_jpeg

# keys of a sample that hold ragged per-sample lists and are never stacked
RAGGED_KEYS = ("jpeg", "video_plan")


def jpeg_tensor(data: bytes) -> torch.Tensor:
    """JPEG bytes -> 1-D uint8 tensor (a copy, so the tensor is writable)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_cpu(jpegs: Sequence[bytes | torch.Tensor]) -> list[torch.Tensor]:
    """Decode JPEGs on the CPU (torchvision / libjpeg-turbo) -> list of uint8 [3, H, W]."""
    tensors = [j if isinstance(j, torch.Tensor) else jpeg_tensor(j) for j in jpegs]
    if not tensors:
        return []
    return decode_jpeg(tensors, mode=ImageReadMode.RGB)


def decode_clip_frames(jpegs: Sequence[bytes | torch.Tensor], clip_id: str) -> list[torch.Tensor]:
    """:func:`decode_cpu` of one clip's stored frames; a frame that does not decode raises
    a RuntimeError naming the clip (the store's checksums pass only bytes as written)."""
    try:
        return decode_cpu(jpegs)
    except RuntimeError as exc:
        raise RuntimeError(f"clip {clip_id!r}: its stored JPEG frames do not decode ({exc}); "
                           "run `pipeline verify STORE`") from exc


def decode_gpu(
    jpegs: Sequence[torch.Tensor], device: str | torch.device = "cuda"
) -> list[torch.Tensor]:
    """Batched nvJPEG decode of many JPEG byte tensors -> list of uint8 [3, H, W] on ``device``."""
    if not jpegs:
        return []
    return decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """default_collate, except ragged keys (JPEG lists, crop plans) stay per-sample lists."""
    ragged = {k: [s.pop(k) for s in samples] for k in RAGGED_KEYS if k in samples[0]}
    batch = default_collate(samples)
    batch.update(ragged)
    return batch


def finish_video_on_gpu(
    batch: dict[str, Any], device: str | torch.device = "cuda", key: str = "video"
) -> dict[str, Any]:
    """Decode and render the batch's video on ``device`` (GPU decode path entry point).

    ``batch["jpeg"][b]`` holds sample b's unique needed frames (JPEG byte tensors) and
    ``batch["video_plan"][b]`` its plan: {"order": LongTensor into the decoded frames
    ([T] for one window, [K, T] for K eval windows, [] for one frame), "box": (top, left, h,
    w), "flip": bool, "size": int}. Writes float32 ``batch[key]`` on ``device`` with the CPU
    path's shape, and moves ``audio`` there too.
    """
    from store.views.render import render_frames  # lazy: store.views imports this module

    counts = [len(j) for j in batch["jpeg"]]
    flat = [t for sample in batch["jpeg"] for t in sample]
    decoded = decode_gpu(flat, device)
    out = []
    pos = 0
    for n, plan in zip(counts, batch["video_plan"], strict=True):
        frames = decoded[pos : pos + n]
        pos += n
        order = plan["order"]
        if n == 0:  # no video: zeros, like the CPU path
            shape = (*order.shape, 3, plan["size"], plan["size"])
            out.append(torch.zeros(shape, device=device))
            continue
        stack = torch.stack(frames)  # [n, 3, H, W] uint8
        rendered = render_frames(stack, plan["box"], plan["size"], plan["flip"])
        out.append(rendered[order.to(device)])
    batch[key] = torch.stack(out)
    if "audio" in batch and isinstance(batch["audio"], torch.Tensor):
        batch["audio"] = batch["audio"].to(device, non_blocking=True)
    batch.pop("jpeg")
    batch.pop("video_plan")
    return batch
