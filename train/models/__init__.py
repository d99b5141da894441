"""Model zoo: ``build_model(name, size, **kw)`` over a registry of builders.

Builders are registered as ``"module:function"`` strings and imported on first use, so that
importing ``train.models`` stays cheap and one broken model file cannot break the others.
A builder is called as ``builder(size=size, **kw)`` and returns an ``nn.Module``.
Add a model with :func:`register_model` or by adding a line to ``MODEL_REGISTRY``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

MODEL_REGISTRY: dict[str, str | Callable[..., nn.Module]] = {
    # MAViL (Huang et al.): pre-training stages and fine-tuning heads.
    "mavil": "train.models.mavil:build_mavil",
    "mavil_stage2": "train.models.mavil_stage2:build_mavil_stage2",
    "mavil_audio_ft": "train.models.mavil_finetune:build_audio_classifier",
    "mavil_video_ft": "train.models.mavil_finetune:build_video_classifier",
    "mavil_av_ft": "train.models.mavil_finetune:build_av_classifier",
    # Peers from the same store (MODELS-PEERS): CAV-MAE, Audiovisual MAE, uni-modal MAEs.
    "cav_mae": "train.models.cav_mae:build_cav_mae",
    "cav_mae_ft": "train.models.cav_mae:build_cav_mae_ft",
    "av_mae": "train.models.av_mae:build_av_mae",
    "av_mae_ft": "train.models.av_mae:build_av_mae_ft",
    "audio_mae": "train.models.uni_mae:build_audio_mae",
    "video_mae": "train.models.uni_mae:build_video_mae",
}


def register_model(name: str, builder: str | Callable[..., nn.Module]) -> None:
    """Register ``builder`` (a callable or a ``"module:function"`` string) under ``name``."""
    if name in MODEL_REGISTRY and MODEL_REGISTRY[name] != builder:
        raise ValueError(f"model {name!r} is already registered")
    MODEL_REGISTRY[name] = builder


def _resolve(name: str) -> Callable[..., nn.Module]:
    try:
        target = MODEL_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise KeyError(f"unknown model {name!r}; known models: {known}") from None
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_model(name: str, size: str = "base", **kw) -> nn.Module:
    """Build a registered model, e.g. ``build_model("mavil", "base", fusion="mbt")``."""
    return _resolve(name)(size=size, **kw)


def available_models() -> list[str]:
    return sorted(MODEL_REGISTRY)
