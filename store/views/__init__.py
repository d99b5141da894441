"""Composable views that turn a stored clip into model inputs (one idea per module)."""

from store.views.audio import AudioView, add_noise, normalize_fbank, random_roll, spec_augment
from store.views.crop import center_square_box, random_resized_crop_box
from store.views.labels import LabelView
from store.views.mixup import Mixup, mix_log_mel
from store.views.norm import NORM_NAMES, PRESETS, AudioNorm, audio_norm
from store.views.presets import VIEW_NAMES, default_norm, make_view
from store.views.sample import SampleView
from store.views.video import ClipView, FrameView, MultiClipView, eval_starts, window

__all__ = [
    "NORM_NAMES",
    "PRESETS",
    "VIEW_NAMES",
    "AudioNorm",
    "AudioView",
    "ClipView",
    "FrameView",
    "LabelView",
    "Mixup",
    "MultiClipView",
    "SampleView",
    "add_noise",
    "audio_norm",
    "center_square_box",
    "default_norm",
    "eval_starts",
    "make_view",
    "mix_log_mel",
    "normalize_fbank",
    "random_resized_crop_box",
    "random_roll",
    "spec_augment",
    "window",
]
