"""Named views: one place that turns a recipe's choice into a configured :class:`SampleView`.

Defaults follow MAViL Table 10 and the appendix "Data Preprocessing"; recipes override.

| name           | audio                                | video                         | norm     |
| -------------- | ------------------------------------ | ----------------------------- | -------- |
| mavil_pretrain | R (random start, cyclic roll)        | 8 frames, crop 0.2-1, flip    | audiomae |
| mavil_finetune | R + gain + SpecAug 192/48, mixup 0.5 | 8 frames, crop 0.2-1, flip    | audiomae |
| mavil_eval     | none                                 | centre window, centre crop    | audiomae |
| mavil_eval10   | none (same 10-s audio)               | 10 uniformly spaced windows   | audiomae |
| cavmae_train   | R                                    | one random frame, centre crop | cavmae   |
| cavmae_eval    | none                                 | middle frame, centre crop     | cavmae   |
| audio_train    | R (+ SpecAug / mixup / noise if set) | -                             | audiomae |
| audio_eval     | none                                 | -                             | audiomae |
| video_train    | -                                    | 8 frames, crop 0.2-1, flip    | -        |
| video_eval     | -                                    | centre window, centre crop    | -        |

``pixels="uint8"`` makes any video view return uint8 pixels for the consumer to normalise on
its device (``SampleView.to_device``; what the trainer and evaluation use), ``"float"`` (the
default) normalised float32.

``norm`` is the audio normalisation preset (store/views/norm.py): ``audiomae`` is
``(x + 4.2677393) / (2 * 4.5689974)``, ``cavmae`` is ``(x + 5.081) / 4.4849``. Labels are on by
default with ``num_classes`` taken from the store's vocabulary when the dataset opens it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from store.views.audio import AudioView
from store.views.labels import LabelView
from store.views.mixup import Mixup
from store.views.norm import AudioNorm, audio_norm
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


def default_norm(name: str) -> str:
    """The normalisation preset a view family uses unless told otherwise."""
    return "cavmae" if name.startswith("cavmae") else "audiomae"


def make_view(
    name: str,
    *,
    norm: str | Mapping[str, Any] | AudioNorm | None = None,
    num_classes: int | None = None,
    labels: bool = True,
    multi_label: bool = True,
    decode: str = "cpu",
    pixels: str = "float",
    time_mask: int | None = None,
    freq_mask: int | None = None,
    noise_snr_db: float | None = None,
    mixup: float | None = None,
    gain: bool | None = None,
    **video_kw: Any,
) -> SampleView:
    """Build a named view.

    ``norm``: audio normalisation, a preset name (``audiomae``, ``cavmae``, ``vggsound``,
    ``esc``, ``spc``, ``spc_audiomae``, ``store``), a saved ``AudioNorm.to_dict()`` or an
    AudioNorm; default: :func:`default_norm` of the view family. ``num_classes``: label
    count (default: the store's vocabulary size, filled in by the dataset); ``labels=False``
    leaves labels out. ``mixup``: rate (Table 10: 0.5 for AS/VGGSound FT); ``time_mask`` /
    ``freq_mask``: SpecAugment; ``decode``: "cpu" or "gpu" (see store.jpeg); ``pixels``:
    "float" (video normalised in the loader) or "uint8" (normalised on the device by
    ``SampleView.to_device``); ``video_kw`` go to the video view (e.g. size, scale)."""
    if name not in VIEW_NAMES:
        raise ValueError(f"unknown view {name!r}; choose one of {', '.join(VIEW_NAMES)}")
    family_scale = 1.0 if name.startswith("cavmae") else 2.0  # scale of the "store" preset
    norm = audio_norm(default_norm(name) if norm is None else norm, scale=family_scale)
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
        norm=norm,
        roll=train,
        gain=gain,
        time_mask=time_mask,
        freq_mask=freq_mask,
        noise_snr_db=noise_snr_db,
    )
    video: Any = None
    if name.startswith("mavil_eval10"):
        video = MultiClipView(decode=decode, pixels=pixels, **video_kw)
    elif name.startswith(("mavil", "video")):
        video = ClipView(decode=decode, pixels=pixels, train=train, **video_kw)
    elif name.startswith("cavmae"):
        video = FrameView(decode=decode, pixels=pixels, train=train, **video_kw)
    label_view = LabelView(num_classes, multi_label) if labels else None
    mix = Mixup(prob=mixup) if mixup else None
    if mix is not None and label_view is None:
        raise ValueError("mixup needs labels: leave labels=True")
    if name.startswith("video"):
        audio = None  # plain Video-MAE: no audio input at all
    return SampleView(audio=audio, video=video, labels=label_view, mixup=mix)
