"""Loading a checkpoint for evaluation, with the one-line errors for bad input.

``EvalError`` carries a message meant to be printed as is (the CLI prints it and exits 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from eval.views import FAMILIES
from store.reader import Store
from train.checkpoints import CheckpointError
from train.trained import load_trained, resolve_checkpoint

PRETRAIN_MODELS = ("mavil", "mavil_stage2", "cav_mae", "av_mae", "audio_mae", "video_mae")


class EvalError(Exception):
    """Bad input to an evaluate command (a one-line message)."""


def load_model(ckpt: str | Path, want: str) -> tuple[nn.Module, dict[str, Any], Path]:
    """(model in eval mode, config, checkpoint file); ``want`` "finetune" or "pretrain"."""
    try:
        path = resolve_checkpoint(ckpt)
        model, config = load_trained(path)
    except CheckpointError as exc:
        raise EvalError(str(exc)) from exc
    name = config.get("model", {}).get("name", "?")
    stage = config.get("stage", "?")
    if want == "finetune" and (stage != "finetune" or name not in FAMILIES):
        raise EvalError(
            f"{path}: a {stage} checkpoint of {name!r}, not a fine-tuned classifier; "
            "`evaluate run` needs the output of `train run finetune` "
            "(pre-trained encoders go to `evaluate retrieval`)")
    if want == "pretrain" and (stage == "finetune" or name not in PRETRAIN_MODELS):
        raise EvalError(
            f"{path}: a {stage} checkpoint of {name!r}; `evaluate retrieval` takes a "
            f"pre-trained (not fine-tuned) model, one of {', '.join(PRETRAIN_MODELS)}")
    return model, config, path


def check_vocabulary(config: dict[str, Any], store: Store, num_classes: int | None) -> None:
    """The store's classes must be the checkpoint head's classes, in the same order."""
    mine = [str(m) for m in store.vocabulary["mid"].to_pylist()]
    theirs = config.get("data", {}).get("vocabulary")
    if num_classes is not None and num_classes != len(mine):
        raise EvalError(f"the checkpoint's head has {num_classes} classes but store "
                        f"{store.path} has {len(mine)}; evaluate on the store it was "
                        "fine-tuned for")
    if theirs is not None and [str(m) for m in theirs] != mine:
        bad = next(i for i, (a, b) in enumerate(zip(theirs, mine, strict=False)) if a != b) \
            if len(theirs) == len(mine) else min(len(theirs), len(mine))
        raise EvalError(f"store {store.path} has a different vocabulary from the checkpoint "
                        f"(first difference at class {bad}); scores would be read against "
                        "the wrong classes")


def head_classes(model: nn.Module) -> int | None:
    for attr in ("num_classes",):
        if isinstance(getattr(model, attr, None), int):
            return int(getattr(model, attr))
    head = getattr(model, "head", None) or getattr(model, "mlp_head", None)
    if isinstance(head, nn.Sequential):
        head = head[-1]
    return int(head.out_features) if isinstance(head, nn.Linear) else None


def audio_norm(config: dict[str, Any], store: Store) -> dict[str, float]:
    """fbank normalisation the model was trained with: ``config["data"]["norm"]`` as a
    ``{"mean", "std", "std_scale"}`` mapping; otherwise the store's own statistics
    (``store.datasets.fbank_stats``) with std_scale 1."""
    from store.datasets import fbank_stats

    norm = config.get("data", {}).get("norm")
    out = {**fbank_stats(store), "std_scale": 1.0}
    if isinstance(norm, dict):
        for key in ("mean", "std", "std_scale"):
            if norm.get(key) is not None:
                out[key] = float(norm[key])
    return out
