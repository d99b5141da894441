"""Which stored frames (and audio) each fine-tuned model sees at inference.

- audio-only models (any family): ``audio_eval``, one pass for ``--clips 1`` and ``10``
  alike (supp. B.3 / Table 2: the audio result does not change with the clip count);
- MAViL and Audiovisual-MAE, video or A+V: ``--clips 1`` = ``mavil_eval`` (the centre 4-s
  window, centre crop); ``--clips 10`` = ``mavil_eval10`` (10 uniformly spaced 4-s windows,
  the same 10-s audio for all ten);
- CAV-MAE, video or A+V: ``--clips 1`` = ``cavmae_eval`` (frame n // 2); ``--clips 10`` =
  frames ``int(k * n / 10)``, k = 0..9.

The CAV-MAE frames follow the official preprocessing (``extract_video_frame.py`` keeps frame
``int(i * total / 10)`` of the first 10 s for i = 0..9, and ``run_cavmae_ft.py`` scores each of
them); on a 2-fps store that is stored frame ``int(k * n / 10)``. Every view decodes the union
of the frames it needs once per clip (the plan's unique frames), however much windows overlap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from store.views import make_view
from store.views.audio import AudioView
from store.views.crop import center_square_box
from store.views.norm import PRESETS
from store.views.sample import SampleView
from store.views.video import Plan, VideoViewBase, _plan

CAVMAE_FRAMES = 10


def cavmae_frame_indices(n_frames: int, num: int = CAVMAE_FRAMES) -> list[int]:
    """CAV-MAE's evaluation frames on a stack of ``n_frames``: ``int(k * n / num)``."""
    return [int(k * (n_frames / num)) for k in range(num)]


@dataclass
class CAVMAEFramesView(VideoViewBase):
    """CAV-MAE multi-frame inference -> float32 [num, 3, size, size] (centre crop)."""

    num: int = CAVMAE_FRAMES

    def out_shape(self) -> tuple[int, ...]:
        return (self.num, 3, self.size, self.size)

    def plan(self, n_frames: int, height: int, width: int, g: torch.Generator) -> Plan:
        idx = torch.tensor(cavmae_frame_indices(n_frames, self.num))
        return _plan(idx, center_square_box(height, width), False)


@dataclass
class InferenceSetup:
    """What a fine-tuned model needs: its family, input modalities and the sample view."""

    family: str  # "mavil" | "cav_mae" | "av_mae"
    modalities: tuple[str, ...]
    view: SampleView
    num_views: int  # video views averaged per clip (1 for audio-only models)
    view_name: str


FAMILIES = {
    "mavil_audio_ft": "mavil", "mavil_video_ft": "mavil", "mavil_av_ft": "mavil",
    "cav_mae_ft": "cav_mae", "av_mae_ft": "av_mae",
}


def model_modalities(model: Any) -> tuple[str, ...]:
    if hasattr(model, "modalities"):
        return tuple(model.modalities)
    mode = getattr(model, "mode", "av")
    return ("audio", "video") if mode == "av" else (mode,)


def inference_setup(name: str, model: Any, clips: int, audio: dict[str, Any],
                    decode: str = "cpu", size: int = 224, num_frames: int = 8,
                    audio_frames: int = 1024, pixels: str = "float") -> InferenceSetup:
    """The view for model ``name`` at ``clips`` (1 or 10). ``audio``: ``{"norm": AudioNorm}``
    (``{}``: the view family's default preset); ``size``, ``num_frames``, ``audio_frames``: the
    input sizes the model was trained with (the recipe's data.video_size, data.num_frames,
    data.audio_frames); ``pixels="uint8"`` leaves video normalisation to
    ``setup.view.to_device(batch, device)``."""
    if clips not in (1, 10):
        raise ValueError(f"--clips takes 1 or 10, not {clips}")
    family = FAMILIES[name]
    mods = model_modalities(model)
    if "video" not in mods:
        view_name, views = "audio_eval", 1
        view = make_view(view_name, decode=decode, **audio)
    elif family == "cav_mae":
        views = clips
        if clips == 1:
            view_name = "cavmae_eval"
            view = make_view(view_name, decode=decode, pixels=pixels, size=size, **audio)
        else:
            view_name = "cavmae_frames10"
            norm = audio.get("norm", PRESETS["cavmae"])
            view = SampleView(audio=AudioView(norm=norm),
                              video=CAVMAEFramesView(size=size, decode=decode, pixels=pixels))
    else:
        views = clips
        view_name = "mavil_eval10" if clips == 10 else "mavil_eval"
        view = make_view(view_name, decode=decode, pixels=pixels, size=size,
                         num_frames=num_frames, **audio)
    if "audio" not in mods:
        view = dataclasses.replace(view, audio=None)
    elif view.audio is not None and view.audio.target_frames != audio_frames:
        view = dataclasses.replace(
            view, audio=dataclasses.replace(view.audio, target_frames=audio_frames))
    return InferenceSetup(family, mods, view, views, view_name)
