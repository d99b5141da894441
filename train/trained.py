"""A trained model back from a run: the one place that turns a checkpoint into a module.

The contract between the trainer (writer), ``evaluate`` and the workflows (readers):

* A RUN directory holds ``config.yaml`` (the resolved recipe), ``checkpoints/last.pt``
  (the latest state; epoch files beside it), ``metrics.jsonl``, ``tb/`` (TensorBoard),
  ``images/`` and, once the run has finished, ``summary.json`` with
  ``{"status": "finished", "checkpoint": "<path of the final checkpoint>", ...}``.
* A checkpoint is ``torch.save`` of plain containers and tensors (``weights_only=True``
  loads it) with at least ``"model"`` (state dict of the bare model: no ``module.``
  prefix) and ``"config"`` (a plain nested dict) where
  ``config["stage"]`` is ``"stage1" | "stage2" | "finetune"``,
  ``config["model"]["name"]`` a :data:`train.models.MODEL_REGISTRY` name,
  ``config["model"]["size"]`` its size and ``config["model"]["kwargs"]`` the keyword
  arguments it was built with (``num_classes`` for classifiers), and
  ``config["data"]`` holds ``norm`` (the normalisation preset), ``store`` and
  ``vocabulary`` (the store's class ids, labels.parquet ``mid`` in ``index`` order).

What the trainer (train/loop.py, train/resume.py) writes under that contract:

* ``checkpoints/step_NNNNNNNN.pt`` every ``train.ckpt_every`` steps and at each epoch end,
  ``checkpoints/epoch_EEEE.pt`` (a hard link to the step file of that epoch end, E counted
  from 1) and ``checkpoints/last.pt`` (a hard link to the newest step file); besides
  ``model`` and ``config`` they hold the resume state (optimizer, scheduler, scaler, loader
  and RNG state per rank, step, epoch, world size; see train/resume.py).
* A stage-2 checkpoint stores the STUDENT alone as a plain ``mavil`` model
  (``config["model"]["kwargs"]["target"] == "features"``, ``target_dim`` = the teacher's
  width), so :func:`load_trained` rebuilds it without the teacher; ``config["stage2"]``
  holds ``chain`` (the step files of every teacher so far, stage 1 first) and ``iteration``.
* ``config["model"]["kwargs"]`` always holds the input sizes it was built with
  (``audio_size``, ``img_size``, ``num_frames`` where the model takes them), and
  ``config["data"]`` also ``norm_values`` (the resolved preset: name, mean, std, scale),
  ``audio_frames``, ``video_size``, ``num_frames`` and ``view``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.checkpoints import CheckpointError
from train.models import build_model

LAST = Path("checkpoints") / "last.pt"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a RUN directory meaning its ``checkpoints/last.pt``."""
    p = Path(path)
    if p.is_dir():
        if not (p / LAST).is_file():
            raise CheckpointError(f"{p}: a run directory without {LAST} (has it saved one yet?)")
        return p / LAST
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file or run directory")
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, loaded with ``weights_only=True`` (no code runs)."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, pickled object, not a torch file
        raise CheckpointError(f"{p}: cannot be loaded safely ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{p}: not a training checkpoint of this project "
                              "(expected a dict with 'model' and 'config')")
    return ckpt


def load_trained(path: str | Path, map_location: str | torch.device = "cpu"
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the run's model from its config, load the weights, return ``(model, config)``
    with the model in eval mode."""
    ckpt = load_checkpoint(path, map_location)
    cfg = ckpt["config"]
    spec = cfg.get("model", {})
    try:
        model = build_model(spec["name"], spec.get("size", "base"), **dict(spec.get("kwargs", {})))
    except KeyError as exc:
        raise CheckpointError(f"{resolve_checkpoint(path)}: config names no buildable model "
                              f"({exc})") from exc
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{resolve_checkpoint(path)}: weights do not fit "
                              f"{spec['name']}/{spec.get('size')}: missing {list(missing)[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")
    return model.eval(), cfg
