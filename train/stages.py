"""The model each stage trains, built from the recipe (and a teacher / init checkpoint).

* stage 1 - the recipe's model from scratch (main paper Sec. 4.2: audio from scratch); with
  ``init.video=FILE`` MAViL's video encoder starts from a self-supervised ImageNet MAE
  checkpoint in the official layout (mapped and kernel-inflated by train/checkpoints.py).
* stage 2 - a frozen, eval-mode teacher read with ``weights_only=True`` from a stage-1 or
  stage-2 checkpoint (encoders + fusion only), and a re-initialised student (Sec. 3.3 / 4.4:
  not a copy of the teacher) predicting the teacher's features. The checkpoint stores the
  STUDENT alone as a plain ``mavil`` model (``model.kwargs.target = "features"``), so it
  loads without the teacher (``train.trained.load_trained``) and can teach iteration k + 1;
  ``stage2.chain`` lists the checkpoints of every teacher so far (stage 1 first), and
  ``stage2.iteration`` is its length (B.3: K = 3; that iteration k's teacher is student k - 1
  is our reading of the supplement).
* fine-tuning - the pre-trained encoders of ``finetune.init`` under a new head
  (``mavil_{audio,video,av}_ft``, or the peers' classifiers).

Every check that can fail (wrong teacher model or size, input sizes that differ) runs here,
before any training work.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from train.checkpoints import CheckpointError, load_public_checkpoint, strip_prefixes
from train.models import MODEL_REGISTRY, build_model
from train.trained import load_checkpoint, resolve_checkpoint


class StageError(ValueError):
    """The stage cannot be built from this recipe / checkpoint; one line says why."""


# input-size keyword arguments of the MAViL family, set from the data section
_INPUT_KEYS = ("audio_size", "num_frames", "img_size")
FINETUNE_MODELS = {
    "mavil": {"audio": "mavil_audio_ft", "video": "mavil_video_ft", "av": "mavil_av_ft"},
    "audio_mae": {"audio": "mavil_audio_ft"},
    "video_mae": {"video": "mavil_video_ft"},
    "cav_mae": {m: "cav_mae_ft" for m in ("audio", "video", "av")},
    "av_mae": {m: "av_mae_ft" for m in ("audio", "video", "av")},
}
MODE_INPUTS = {"audio": ["audio"], "video": ["video"], "av": ["audio", "video"]}


def _input_keys(name: str) -> tuple[str, ...]:
    """The input-size kwargs a model family takes (CAV-MAE: one frame, no num_frames)."""
    return ("audio_size", "img_size") if name.startswith("cav_mae") else _INPUT_KEYS


def model_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The recipe's model kwargs, with the input sizes from ``data`` (one place sets them)."""
    kw = dict(OmegaConf.to_container(cfg.model.kwargs, resolve=True))
    d = cfg.data
    sizes = {"audio_size": [d.audio_frames, 128], "img_size": d.video_size,
             "num_frames": d.num_frames}
    kw.update({k: sizes[k] for k in _input_keys(cfg.model.name)})
    return kw


def _build(name: str, size: str, kw: dict[str, Any]) -> nn.Module:
    if name not in MODEL_REGISTRY:
        raise StageError(f"unknown model {name!r}; known: {', '.join(sorted(MODEL_REGISTRY))}")
    try:
        return build_model(name, size, **{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in kw.items()})
    except (TypeError, KeyError, ValueError) as exc:
        raise StageError(f"cannot build {name}/{size} with {kw}: {exc}") from None


def _check_inputs(cfg: DictConfig, saved: dict[str, Any], what: str) -> None:
    mine = model_kwargs(cfg)
    for key in _INPUT_KEYS:
        if key in mine and key in saved and list(mine[key] if isinstance(mine[key], (list, tuple))
                                                 else [mine[key]]) != list(
                saved[key] if isinstance(saved[key], (list, tuple)) else [saved[key]]):
            raise StageError(f"{what} was trained with {key}={saved[key]} but this recipe "
                             f"gives {mine[key]} (set data.* to match)")


def _checkpoint(path: str, what: str) -> tuple[str, dict[str, Any]]:
    if not path:
        raise StageError(f"no {what} checkpoint given")
    try:
        p = resolve_checkpoint(path).resolve()
        ckpt = load_checkpoint(p)
    except CheckpointError as exc:
        raise StageError(f"{what}: {exc}") from None
    if p.name == "last.pt":  # name the step file it links to: last.pt moves on, it does not
        same = [q for q in sorted(p.parent.glob("step_*.pt")) if os.path.samefile(q, p)]
        p = same[-1] if same else p
    return str(p), ckpt


def build_stage1(cfg: DictConfig) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """(model to train, module to save, notes for the summary)."""
    kw = model_kwargs(cfg)
    cfg.model.kwargs = kw  # what it was built with (train.trained rebuilds from it)
    model = _build(cfg.model.name, cfg.model.size, kw)
    notes: dict[str, Any] = {"video_init": "random"}
    if cfg.init.video:
        if not hasattr(model, "video_encoder"):
            raise StageError(f"init.video given but {cfg.model.name} has no video encoder")
        try:
            report = load_public_checkpoint(model, cfg.init.video, layout="image_mae",
                                            require=("video_encoder.blocks.",))
        except CheckpointError as exc:
            raise StageError(f"init.video: {exc}") from None
        notes["video_init"] = f"{cfg.init.video} ({len(report.loaded)} tensors mapped)"
    return model, model, notes


def build_stage2(cfg: DictConfig) -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    from train.models.mavil import MAViL
    from train.models.mavil_stage2 import MAViLStage2, freeze

    if cfg.model.name != "mavil":
        raise StageError(f"stage 2 trains MAViL; model.name={cfg.model.name!r}")
    path, ckpt = _checkpoint(cfg.stage2.teacher, "teacher")
    tcfg = ckpt["config"]
    tmodel, tstage = tcfg.get("model", {}), tcfg.get("stage")
    if tmodel.get("name") != "mavil" or tstage not in ("stage1", "stage2"):
        raise StageError(f"teacher {path} is a {tmodel.get('name')} {tstage} checkpoint; "
                         "stage 2 needs a MAViL stage-1 or stage-2 checkpoint")
    if tmodel.get("size") != cfg.model.size:
        raise StageError(f"teacher {path} is MAViL-{tmodel.get('size')}, the student "
                         f"MAViL-{cfg.model.size}: set model.size={tmodel.get('size')}")
    tkw = dict(tmodel.get("kwargs", {}))
    _check_inputs(cfg, tkw, f"teacher {path}")
    tkw = {k: tuple(v) if isinstance(v, list) else v for k, v in tkw.items()
           if k not in ("target", "target_dim", "with_decoders")}
    teacher = MAViL(size=cfg.model.size, **tkw, with_decoders=False)
    state = {k: v for k, v in strip_prefixes(ckpt["model"], ("module.", "student.")).items()
             if "_decoder." not in k}
    try:
        missing, unexpected = teacher.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ
        raise StageError(f"teacher {path} does not fit MAViL-{cfg.model.size}: "
                         f"{str(exc).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        raise StageError(f"teacher {path} does not fit MAViL-{cfg.model.size}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")
    chain = list(tcfg.get("stage2", {}).get("chain", [])) if tstage == "stage2" else []
    chain.append(path)
    if cfg.stage2.iteration is not None and cfg.stage2.iteration != len(chain):
        raise StageError(f"--iteration {cfg.stage2.iteration} but teacher {path} makes this "
                         f"iteration {len(chain)} (chain: {' -> '.join(chain)})")
    cfg.stage2.chain, cfg.stage2.iteration = chain, len(chain)
    cfg.model.kwargs = {**OmegaConf.to_container(cfg.model.kwargs), "target": "features",
                        "target_dim": teacher.dim}
    cfg.model.kwargs = model_kwargs(cfg)  # the student's build kwargs, saved as a plain mavil
    student_kw = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.kwargs.items()}
    # a fresh student (Sec. 3.3), and not the stage-1 initialisation again: its own seed
    torch.manual_seed(cfg.train.seed + 1000 * len(chain))
    student = MAViL(size=cfg.model.size, **student_kw)
    model = MAViLStage2(student, freeze(teacher), cfg.stage2.target, cfg.stage2.target_norm,
                        {"size": cfg.model.size, **student_kw})
    return model, student, {"teacher": path, "iteration": len(chain)}


SCRATCH = "scratch"


def _scratch_finetune(cfg: DictConfig, num_classes: int) -> tuple[nn.Module, nn.Module, dict]:
    """``finetune.init=scratch``: the recipe's model family and size, random encoders (the
    from-scratch baseline a pre-training gain is measured against)."""
    mode = cfg.finetune.mode
    base = cfg.model.name
    name = FINETUNE_MODELS.get(base, {}).get(mode)
    if name is None:
        raise StageError(f"model.name={base!r}: no {mode} fine-tuning model")
    if num_classes < 1:
        raise StageError(f"store {cfg.data.store} has no label vocabulary to fine-tune on")
    cfg.model.name, cfg.model.inputs = name, MODE_INPUTS[mode]
    kw = model_kwargs(cfg)
    kw["num_classes"] = num_classes
    if name in ("cav_mae_ft", "av_mae_ft"):
        kw["mode"] = mode
    cfg.model.kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    return _build(name, cfg.model.size, kw), None, {"init": SCRATCH, "init_stage": "none"}


def build_finetune(cfg: DictConfig, num_classes: int) -> tuple[nn.Module, nn.Module, dict]:
    if cfg.finetune.init == SCRATCH:
        model, _, notes = _scratch_finetune(cfg, num_classes)
        return model, model, notes
    path, ckpt = _checkpoint(cfg.finetune.init, "init")
    icfg = ckpt["config"]
    imodel, istage = icfg.get("model", {}), icfg.get("stage")
    if istage not in ("stage1", "stage2"):
        raise StageError(f"init {path} is a {istage} checkpoint; fine-tuning starts from a "
                         "pre-trained (stage 1 / stage 2) one")
    mode = cfg.finetune.mode
    name = FINETUNE_MODELS.get(imodel.get("name"), {}).get(mode)
    if name is None:
        raise StageError(f"init {path} is {imodel.get('name')}: no {mode} fine-tuning model")
    cfg.model.name, cfg.model.size = name, imodel.get("size", cfg.model.size)
    cfg.model.inputs = MODE_INPUTS[mode]
    if num_classes < 1:
        raise StageError(f"store {cfg.data.store} has no label vocabulary to fine-tune on")
    kw = model_kwargs(cfg)
    _check_inputs(cfg, imodel.get("kwargs", {}), f"init {path}")
    kw["num_classes"] = num_classes
    if name in ("cav_mae_ft", "av_mae_ft"):
        kw["mode"] = mode
    cfg.model.kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    model = _build(name, cfg.model.size, kw)
    state = strip_prefixes(ckpt["model"], ("module.", "student."))
    if hasattr(model, "load_pretrained"):
        try:
            report = model.load_pretrained(state)
        except KeyError as exc:
            raise StageError(f"init {path}: {exc}") from None
        missing = report["missing"]
    else:
        missing = list(model.load_state_dict(state, strict=False).missing_keys)
        missing = [k for k in missing if not k.startswith(("mlp_head", "head", "fc_norm"))]
    if missing:
        raise StageError(f"init {path} lacks encoder weights of {name}/{cfg.model.size}, "
                         f"e.g. {missing[:3]}")
    return model, model, {"init": path, "init_stage": istage}
