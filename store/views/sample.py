"""A sample view: one stored clip (optionally mixed with a partner) -> the model's dict.

Output keys (CONTRACT "Data layout"): "audio" float32 [1, 1024, 128], "video" (shape set by
the video view; float32, or uint8 with ``pixels="uint8"``) or, with GPU decode, "jpeg" +
"video_plan"; "label"; "clip_id"; "has_audio"
/ "has_video" (bool); "mix_lambda" (1.0 when not mixed). The dataset adds "index".

Missing-modality policy: a clip with has_audio False gives an all-zero audio input (the
dataset mean after normalisation) and a clip with has_video False all-zero video (the
ImageNet mean after normalisation); the flags let a model or loss skip them, and the
datasets can drop such clips up front (``require=("audio", "video")``).

A consumer turns a collated batch into model inputs with :meth:`SampleView.to_device`, which
finishes whatever the view left to the device (GPU JPEG decode, uint8 normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from store.views.audio import AudioView
from store.views.labels import LabelView
from store.views.mixup import Mixup, mix_log_mel, mix_tensors
from store.views.video import VideoViewBase


@dataclass
class SampleView:
    audio: AudioView | None = None
    video: VideoViewBase | None = None
    labels: LabelView | None = None
    mixup: Mixup | None = None

    def __post_init__(self) -> None:
        if (self.mixup is not None and self.mixup.mix_video and self.video is not None
                and self.video.decode == "cpu" and self.video.pixels == "uint8"):
            raise ValueError("mixup mixes normalised video pixels, which uint8 cannot hold: "
                             "use pixels='float' with video mixup")

    def to_device(self, batch: dict[str, Any], device: str | torch.device) -> dict[str, Any]:
        """A collated batch of this view's samples as model inputs on ``device``: "audio"
        and "video" moved there (non-blocking, so pinned batches copy asynchronously), GPU
        decode finished (store.jpeg.finish_video_on_gpu), uint8 video normalised there -
        once, by dtype: float video is already normalised - and clips without video set to
        0.0 as the float path gives them. Call it exactly once per batch."""
        if "jpeg" in batch:
            from store.jpeg import finish_video_on_gpu  # lazy: store.jpeg is the GPU path

            batch = finish_video_on_gpu(batch, device)
        out = dict(batch)
        if isinstance(out.get("audio"), torch.Tensor):
            out["audio"] = out["audio"].to(device, non_blocking=True)
        video = out.get("video")
        if isinstance(video, torch.Tensor):
            video = video.to(device, non_blocking=True)
            if video.dtype == torch.uint8 and self.video is not None:
                video = self.video.normalize(video)
                has = out.get("has_video")
                if isinstance(has, torch.Tensor) and not bool(has.all()):
                    video[~has.to(device)] = 0.0  # the float path's zeros for missing video
            out["video"] = video
        return out

    def for_store(self, num_classes: int, stats: dict | None,
                  target_frames: int | None = None) -> SampleView:
        """This view with what it left to the store filled in: the label count (the
        vocabulary's size) when ``num_classes`` was not given, and the mean / std of the
        "store" normalisation preset from store.json's ``stats``."""
        out = self
        if self.labels is not None and self.labels.num_classes is None:
            out = replace(out, labels=replace(self.labels, num_classes=int(num_classes)))
        if self.audio is not None and not self.audio.norm.resolved:
            out = replace(out, audio=replace(out.audio, norm=self.audio.norm.resolve(stats)))
        if out.audio is not None and out.audio.target_frames is None and target_frames:
            out = replace(out, audio=replace(out.audio, target_frames=int(target_frames)))
        return out

    def wants_partner(self, g: torch.Generator) -> bool:
        """Whether this sample is mixed (draws from ``g``; call once per sample, first)."""
        return self.mixup is not None and self.mixup.wants_partner(g)

    def __call__(self, clip: Any, g: torch.Generator, partner: Any | None = None) -> dict:
        lam = 1.0
        if partner is not None:
            if self.mixup is None:
                raise ValueError("a partner clip was given but this view has no mixup")
            lam = self.mixup.draw_lambda(g)
        out: dict[str, Any] = {"clip_id": clip.clip_id}
        has_audio = bool(clip.has_audio) or (partner is not None and bool(partner.has_audio))
        if self.audio is not None:
            out["audio"] = self._audio(clip, partner, lam, g)
        if self.video is not None:
            out.update(self._video(clip, partner, lam, g))
        if self.labels is not None:
            out["label"] = self._labels(clip, partner, lam)
        out["has_audio"] = has_audio
        out["has_video"] = bool(clip.has_video)
        out["mix_lambda"] = float(lam)
        return out

    def _audio(self, clip: Any, partner: Any | None, lam: float, g: torch.Generator
               ) -> torch.Tensor:
        av = self.audio
        fb, valid = (av.raw(clip.fbank), int(clip.audio_frames)) if clip.has_audio else (None, 0)
        if partner is not None and partner.has_audio:
            pb, pvalid = av.raw(partner.fbank), int(partner.audio_frames)
            base = fb if fb is not None else torch.zeros_like(pb)
            fb, valid = mix_log_mel(base, valid, pb, pvalid, lam, self.mixup.weights)
        return av(fb, valid, g)

    def _video(self, clip: Any, partner: Any | None, lam: float, g: torch.Generator) -> dict:
        mine = self.video(clip, g)
        if partner is None or not self.mixup.mix_video or self.video.decode != "cpu":
            # GPU decode renders later; mixing video there is left to the caller
            return mine
        other = self.video(partner, g)
        return {"video": mix_tensors(mine["video"], other["video"], lam)}

    def _labels(self, clip: Any, partner: Any | None, lam: float) -> torch.Tensor:
        if self.mixup is None:
            return self.labels(clip.labels)
        # with mixup every label is soft multi-hot, whatever the vocabulary kind (BCE, Table 10)
        if partner is None:
            return self.labels.soft(clip.labels)
        return mix_tensors(self.labels.soft(clip.labels), self.labels.soft(partner.labels), lam)
