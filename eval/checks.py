"""Loading a checkpoint for evaluation, with the one-line errors for bad input.

``EvalError`` carries a message meant to be printed as is (the CLI prints it and exits 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from eval.views import FAMILIES
from store.reader import Store
from store.views.norm import AudioNorm
from store.views.norm import audio_norm as norm_from
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
    vocab = store.vocabulary  # labels.parquet mid in ``index`` order, as the trainer saves it
    order = sorted(range(vocab.num_rows), key=lambda i: vocab["index"][i].as_py())
    mids = vocab["mid"].to_pylist()
    mine = [str(mids[i]) for i in order]
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


def audio_norm(config: dict[str, Any], store: Store) -> dict[str, AudioNorm]:
    """``{"norm": AudioNorm}`` for ``make_view``: the normalisation the model was trained with.

    The trainer saves the preset's name in ``config["data"]["norm"]`` and its resolved values
    in ``config["data"]["norm_values"]`` (``AudioNorm.to_dict()``); the resolved values win, so
    a ``"store"`` preset keeps the training store's statistics whatever store is scored.
    Without either, the view family's default preset applies (no entry)."""
    data = config.get("data", {}) or {}
    saved = data.get("norm_values") or {}
    try:
        if saved.get("mean") is not None and saved.get("std") is not None:
            return {"norm": norm_from(saved)}
        name = data.get("norm")
        if name is None:
            return {}
        return {"norm": norm_from(name).resolve(store.spec.stats)}
    except ValueError as exc:
        raise EvalError(f"the checkpoint's normalisation: {exc}") from None


def input_sizes(config: dict[str, Any]) -> dict[str, int]:
    """The input sizes the model was trained with (recipe data.video_size / num_frames /
    audio_frames; the model's own img_size kwarg as a fallback)."""
    data = config.get("data", {})
    kw = config.get("model", {}).get("kwargs", {})
    return {"size": int(data.get("video_size", kw.get("img_size", 224))),
            "num_frames": int(data.get("num_frames", kw.get("num_frames", 8))),
            "audio_frames": int(data.get("audio_frames", (kw.get("audio_size") or [1024])[0]))}
