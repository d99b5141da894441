"""Video views over the stored 2-fps frame stack (MAViL appendix "Data Preprocessing").

- :class:`ClipView`: MAViL's 4-s clip = 8 consecutive frames at 2 fps -> [8, 3, 224, 224].
  Train: random start, cyclic loop past the end, one multi-scale random resized crop
  (scale 0.2-1.0) and one horizontal flip (p=0.5) shared by all 8 frames. Eval: the centre
  window, centre crop, no flip.
- :class:`MultiClipView`: 10-clip inference (supplement B.3): 10 windows whose starts are
  uniformly spaced over [0, n_frames - 8] -> [10, 8, 3, 224, 224].
- :class:`FrameView`: CAV-MAE's single frame (a random one in training, the middle one at
  eval) -> [3, 224, 224].

Each view first makes a *plan* (which stored frames, which box, flip) from the clip's frame
count and size alone; the CPU path then decodes just those frames, the GPU path ships the
JPEG bytes and the plan to :func:`store.jpeg.finish_video_on_gpu`.

``pixels`` says what the CPU path returns: "float" (default) the ImageNet-normalised float32
model input; "uint8" the cropped, resized, flipped pixels, left for the consumer to
normalise on its device with :meth:`VideoViewBase.normalize` (what
:meth:`store.views.sample.SampleView.to_device` does for a batch) - the same float32 values,
4x fewer bytes from the loader workers to the trainer. In the batch ring's workers a
uint8 view leaves the rendering to the collate, which writes each sample straight into the
batch (:class:`store.views.deferred.PendingVideo`, the same pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from store.jpeg import jpeg_tensor
from store.views.crop import CROP_RATIO, CROP_SCALE, Box, center_square_box, random_resized_crop_box
from store.views.deferred import (
    PendingVideo,
    channels_last_order,
    empty_in_order,
    renders_in_collate,
)
from store.views.render import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    blank_pixels,
    normalize_pixels,
)

CLIP_FRAMES = 8  # 4 s at 2 fps
PIXELS = ("float", "uint8")
EVAL_CLIPS = 10


def window(start: int, n_frames: int, length: int = CLIP_FRAMES) -> list[int]:
    """Frame indices of a window of ``length`` starting at ``start``, looping cyclically."""
    if n_frames < 1:
        raise ValueError("a window needs at least one frame")
    return [(start + k) % n_frames for k in range(length)]


def eval_starts(n_frames: int, num_clips: int = EVAL_CLIPS, length: int = CLIP_FRAMES) -> list[int]:
    """Starts of ``num_clips`` windows uniformly spaced over [0, n_frames - length] (rounded).

    The first window starts at frame 0 and the last ends on the last frame, so together they
    cover the clip; a clip shorter than ``length`` frames gives all-zero starts (looped).
    """
    last = max(n_frames - length, 0)
    return [int(round(float(s))) for s in torch.linspace(0, last, num_clips, dtype=torch.float64)]


@dataclass
class Plan:
    """Which stored frames to decode (``frames``), how to index the rendered unique frames
    into the output (``order``), the crop box and the flip."""

    frames: list[int]
    order: torch.Tensor
    box: Box
    flip: bool


def _plan(indices: torch.Tensor, box: Box, flip: bool) -> Plan:
    unique, order = torch.unique(indices, sorted=True, return_inverse=True)
    return Plan([int(i) for i in unique], order, box, flip)


@dataclass
class VideoViewBase:
    size: int = 224
    decode: str = "cpu"  # "cpu": render here; "gpu": return JPEG bytes + plan
    pixels: str = "float"  # cpu decode: "float" normalised here, "uint8" on the device later
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.pixels not in PIXELS:
            raise ValueError(f"pixels must be one of {PIXELS}, not {self.pixels!r}")

    def normalize(self, video: torch.Tensor) -> torch.Tensor:
        """Model input from this view's video output: uint8 pixels are ImageNet-normalised
        (on their device); float video already is, and passes through unchanged."""
        if video.dtype != torch.uint8:
            return video
        return normalize_pixels(video, self.mean, self.std)

    def plan(self, n_frames: int, height: int, width: int, g: torch.Generator) -> Plan:
        raise NotImplementedError

    def out_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def __call__(self, clip: Any, g: torch.Generator) -> dict:
        """``clip`` has ``frames`` (list of JPEG bytes), ``height``, ``width``, ``has_video``.

        Returns {"video": float32 or uint8 tensor} (cpu, see ``pixels``) or {"jpeg": [...],
        "video_plan": {...}} (gpu). A clip without video gives zeros (cpu; with uint8 pixels
        SampleView.to_device zeroes the normalised video of has_video False clips, so the
        model input is the same) or an empty JPEG list (gpu).
        """
        deferred = self.decode == "cpu" and self.pixels == "uint8" and renders_in_collate()
        if not clip.has_video or not clip.frames:
            if deferred:
                return {"video": PendingVideo(clip.clip_id, [], (0, 0, 1, 1), self.size, False,
                                          torch.zeros(()), self.out_shape())}
            if self.decode == "gpu":
                order = torch.zeros(self.out_shape()[:-3], dtype=torch.long)
                plan = {"order": order, "box": (0, 0, 1, 1), "flip": False, "size": self.size}
                return {"jpeg": [], "video_plan": plan}
            dtype = torch.uint8 if self.pixels == "uint8" else torch.float32
            return {"video": blank_pixels(self.out_shape(), dtype)}
        p = self.plan(len(clip.frames), clip.height, clip.width, g)
        if self.decode == "gpu":
            jpegs = [jpeg_tensor(clip.frames[i]) for i in p.frames]
            plan = {"order": p.order, "box": p.box, "flip": p.flip, "size": self.size}
            return {"jpeg": jpegs, "video_plan": plan}
        if self.decode != "cpu":
            raise ValueError(f"decode must be 'cpu' or 'gpu', not {self.decode!r}")
        # only the frames needed, decoded when it is rendered: here, or (deferred) by the
        # batch ring's collate straight into the batch
        video = PendingVideo(clip.clip_id, [clip.frames[i] for i in p.frames], p.box,
                             self.size, p.flip, p.order, self.out_shape())
        if deferred:
            return {"video": video}
        if self.pixels == "float":
            return {"video": video.render_normalized(self.mean, self.std)}
        shape = self.out_shape()
        return {"video": video.render(empty_in_order(shape, channels_last_order(len(shape))))}


@dataclass
class ClipView(VideoViewBase):
    """MAViL 4-s clip view -> float32 [8, 3, size, size]."""

    train: bool = True
    num_frames: int = CLIP_FRAMES
    scale: tuple[float, float] = CROP_SCALE
    ratio: tuple[float, float] = CROP_RATIO
    flip_p: float = 0.5

    def out_shape(self) -> tuple[int, ...]:
        return (self.num_frames, 3, self.size, self.size)

    def plan(self, n_frames: int, height: int, width: int, g: torch.Generator) -> Plan:
        if self.train:
            # random starting point anywhere in the clip; frames past the end loop to the start
            start = int(torch.randint(0, n_frames, (1,), generator=g))
            box = random_resized_crop_box(height, width, g, self.scale, self.ratio)
            flip = bool(torch.rand(1, generator=g) < self.flip_p)
        else:
            start = max(n_frames - self.num_frames, 0) // 2
            box, flip = center_square_box(height, width), False
        idx = torch.tensor(window(start, n_frames, self.num_frames))
        return _plan(idx, box, flip)


@dataclass
class MultiClipView(VideoViewBase):
    """10-clip inference view -> float32 [num_clips, 8, 3, size, size] (centre crop)."""

    num_clips: int = EVAL_CLIPS
    num_frames: int = CLIP_FRAMES

    def out_shape(self) -> tuple[int, ...]:
        return (self.num_clips, self.num_frames, 3, self.size, self.size)

    def plan(self, n_frames: int, height: int, width: int, g: torch.Generator) -> Plan:
        starts = eval_starts(n_frames, self.num_clips, self.num_frames)
        idx = torch.tensor([window(s, n_frames, self.num_frames) for s in starts])
        return _plan(idx, center_square_box(height, width), False)


@dataclass
class FrameView(VideoViewBase):
    """CAV-MAE single-frame view -> float32 [3, size, size].

    CAV-MAE resizes and centre-crops the frame to 224 in both training and eval; it picks a
    random frame in training and the middle one (index n // 2) at eval.
    """

    train: bool = True

    def out_shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    def plan(self, n_frames: int, height: int, width: int, g: torch.Generator) -> Plan:
        if self.train:
            i = int(torch.randint(0, n_frames, (1,), generator=g))
        else:
            i = n_frames // 2
        return Plan([i], torch.tensor(0), center_square_box(height, width), False)
