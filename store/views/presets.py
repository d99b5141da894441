"""Named views: one place that turns a recipe's choice into a configured :class:`SampleView`.

Defaults follow MAViL Table 10 and the appendix "Data Preprocessing"; recipes override.

| name            | audio                                | video                             |
| --------------- | ------------------------------------ | --------------------------------- |
| mavil_pretrain  | R (random start, cyclic roll)        | 8 frames, random crop 0.2-1, flip |
| mavil_finetune  | R + gain + SpecAug 192/48, mixup 0.5 | 8 frames, random crop 0.2-1, flip |
| mavil_eval      | none                                 | centre window, centre crop        |
| mavil_eval10    | none (same 10-s audio)               | 10 uniformly spaced windows       |
| cavmae_train    | R                                    | one random frame, centre crop     |
| cavmae_eval     | none                                 | middle frame, centre crop         |
| audio_train     | R (+ SpecAug / mixup / noise if set) | -                                 |
| audio_eval      | none                                 | -                                 |
| video_train     | -                                    | 8 frames, random crop 0.2-1, flip |
| video_eval      | -                                    | centre window, centre crop        |
"""

from __future__ import annotations

from typing import Any

from store.views.audio import AUDIOSET_MEAN, AUDIOSET_STD, AudioView
from store.views.labels import LabelView
from store.views.mixup import Mixup
from store.views.sample import SampleView
from store.views.video import ClipView, FrameView, MultiClipView

VIEW_NAMES = (
    "mavil_pretrain",
    "mavil_finetune",
    "mavil_eval",
    "mavil_eval10",
    "cavmae_train",
    "cavmae_eval",
    "audio_train",
    "audio_eval",
    "video_train",
    "video_eval",
)


def make_view(
    name: str,
    *,
    mean: float = AUDIOSET_MEAN,
    std: float = AUDIOSET_STD,
    std_scale: float = 1.0,
    num_classes: int | None = None,
    multi_label: bool = True,
    decode: str = "cpu",
    time_mask: int | None = None,
    freq_mask: int | None = None,
    noise_snr_db: float | None = None,
    mixup: float | None = None,
    gain: bool | None = None,
    **video_kw: Any,
) -> SampleView:
    """Build a named view. ``mean`` / ``std``: fbank normalisation (Table 10 AS values by
    default; pass the store's stats); ``num_classes`` enables labels; ``mixup``: rate (Table
    10: 0.5 for AS/VGGSound FT); ``time_mask`` / ``freq_mask``: SpecAugment; ``decode``:
    "cpu" or "gpu" (see store.jpeg); ``video_kw`` go to the video view (e.g. size, scale)."""
    if name not in VIEW_NAMES:
        raise ValueError(f"unknown view {name!r}; choose one of {', '.join(VIEW_NAMES)}")
    train = name.endswith(("_pretrain", "_finetune", "_train"))
    finetune = name == "mavil_finetune"
    if time_mask is None:
        time_mask = 192 if finetune else 0
    if freq_mask is None:
        freq_mask = 48 if finetune else 0
    if mixup is None:
        mixup = 0.5 if finetune else 0.0
    if gain is None:  # MAViL appendix, fine-tuning: "random time shifts and magnitude aug."
        gain = finetune
    if not train and (time_mask or freq_mask or mixup or gain or noise_snr_db is not None):
        raise ValueError(f"{name} is an eval view: no SpecAugment, noise or mixup")
    audio = AudioView(
        mean=mean,
        std=std,
        std_scale=std_scale,
        roll=train,
        gain=gain,
        time_mask=time_mask,
        freq_mask=freq_mask,
        noise_snr_db=noise_snr_db,
    )
    video: Any = None
    if name.startswith("mavil_eval10"):
        video = MultiClipView(decode=decode, **video_kw)
    elif name.startswith(("mavil", "video")):
        video = ClipView(decode=decode, train=train, **video_kw)
    elif name.startswith("cavmae"):
        video = FrameView(decode=decode, train=train, **video_kw)
    labels = LabelView(num_classes, multi_label) if num_classes else None
    mix = Mixup(prob=mixup) if mixup else None
    if mix is not None and labels is None:
        raise ValueError("mixup needs labels: pass num_classes")
    if name.startswith("video"):
        audio = None  # plain Video-MAE: no audio input at all
    return SampleView(audio=audio, video=video, labels=labels, mixup=mix)
