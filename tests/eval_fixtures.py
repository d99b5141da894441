"""Checkpoints for the eval tests, written per the train/trained.py contract.

A checkpoint is ``torch.save({"model": state_dict, "config": {...}})`` with
config["stage"], config["model"]{name, size, kwargs} and config["data"]{norm, store,
vocabulary}; these are tiny models built with ``train.models.build_model`` (random or
briefly fitted weights), saved exactly as the trainer saves them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from store import open_store
from train.models import build_model


def save_checkpoint(path: Path, name: str, stage: str, store: str, seed: int = 0,
                    model: torch.nn.Module | None = None, **kwargs: Any) -> Path:
    """Build ``name`` (tiny) with ``kwargs`` (or take ``model``) and save it as the trainer
    would, with the store's vocabulary in its config."""
    st = open_store(store)
    if model is None:
        torch.manual_seed(seed)
        model = build_model(name, "tiny", **kwargs)
    config = {
        "stage": stage,
        "model": {"name": name, "size": "tiny", "kwargs": dict(kwargs)},
        "data": {"norm": None, "store": str(store),
                 "vocabulary": st.vocabulary["mid"].to_pylist()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": config}, path)
    return path


def randomize_head(model: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """The fine-tuning head starts at std 2e-5 (scores all ~0.5); give it spread so the
    scores differ between clips and views."""
    g = torch.Generator().manual_seed(seed)
    head = getattr(model, "head", None) or model.mlp_head[-1]
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * std)
