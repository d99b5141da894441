"""MAViL stage 2: masked multimodal contextualised reconstruction (Sec. 3.3, Eq. 5-6).

A frozen teacher MAViL (the stage-1 model, or the previous student for iteration 2+; K = 3
iterations in the supplement, B.3) encodes the COMPLETE (unmasked) audio and video; its
fusion-encoder outputs (``target="fusion"``, MAViL-Fusion, default) or uni-modal encoder
outputs (``target="uni"``, MAViL-Uni) are the targets that a re-initialised student predicts
at masked positions with its decoders (768-d heads). The student keeps the contrastive terms;
there is no raw loss (footnote 1).

The teacher is deliberately NOT a registered submodule: ``parameters()``, ``state_dict()``
and therefore the optimizer, DDP and the trainer's checkpoints see only the student.
``.to()`` / ``.cuda()`` still move it, and it stays in eval mode with ``requires_grad=False``.
It runs under ``torch.no_grad()`` in whatever autocast dtype the caller is using.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import read_public_state_dict, strip_prefixes
from .mavil import MAViL

TARGET_KINDS = ("fusion", "uni")


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class MAViLStage2(nn.Module):
    def __init__(
        self,
        student: MAViL,
        teacher: MAViL,
        target: str = "fusion",
        target_norm: bool = False,
        student_config: dict | None = None,
    ) -> None:
        super().__init__()
        if target not in TARGET_KINDS:
            raise ValueError(f"target must be one of {TARGET_KINDS}, got {target!r}")
        if student.target != "features" or student.target_dim != teacher.dim:
            raise ValueError("the student must predict features of the teacher's width")
        self.student = student
        object.__setattr__(self, "teacher", freeze(teacher))  # hidden from nn.Module registry
        self.target = target
        self.target_norm = target_norm
        self.student_config = dict(student_config or {})  # to re-build a fresh student

    def _apply(
        self, fn, recurse: bool = True
    ) -> MAViLStage2:  # .to(), .cuda(), .half() reach the teacher
        super()._apply(fn, recurse)
        self.teacher._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> MAViLStage2:
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_targets(self, audio: torch.Tensor, video: torch.Tensor) -> dict[str, torch.Tensor]:
        targets = self.teacher.extract_targets(audio, video, self.target)
        if self.target_norm:  # optional parameter-free LayerNorm of every target token
            targets = {k: F.layer_norm(t.float(), t.shape[-1:]) for k, t in targets.items()}
        return {k: t.detach() for k, t in targets.items()}

    def forward(self, audio: torch.Tensor, video: torch.Tensor,
                noise_a: torch.Tensor | None = None, noise_v: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Same output dict as :meth:`MAViL.forward`; ``loss`` is Eq. 6."""
        return self.student(audio, video, targets=self.teacher_targets(audio, video),
                            noise_a=noise_a, noise_v=noise_v)

    def next_iteration(self, **student_kw) -> MAViLStage2:
        """Iteration k+1: this student (copied, frozen) teaches a fresh student (B.3, K = 3)."""
        if not self.student_config:
            raise RuntimeError("next_iteration needs the student_config this model was built with")
        teacher = copy.deepcopy(self.student)
        teacher.audio_decoder = teacher.video_decoder = None  # the teacher only encodes
        config = {**self.student_config, **student_kw}
        device = next(self.student.parameters()).device
        new_student = MAViL(**config).to(device)
        return MAViLStage2(new_student, teacher, self.target, self.target_norm, config)


def _load_state(source: str | Path | dict) -> dict[str, torch.Tensor]:
    """A MAViL state dict from a checkpoint file (read with ``weights_only=True``) or a dict,
    unwrapped from ``model`` / ``state_dict`` / ``student`` and ``module.`` / ``student.``."""
    state = source if isinstance(source, dict) else read_public_state_dict(source)
    for key in ("model", "state_dict", "student"):
        if key in state and isinstance(state[key], dict):
            state = state[key]
    return strip_prefixes(state, ("module.", "student."))


def load_teacher(source: str | Path | dict, **mavil_kw) -> MAViL:
    """A frozen teacher (encoders + fusion only) from a stage-1 / stage-2 MAViL checkpoint."""
    teacher = MAViL(**{**mavil_kw, "with_decoders": False})
    state = {k: v for k, v in _load_state(source).items() if "_decoder." not in k}
    missing, unexpected = teacher.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"teacher checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    return freeze(teacher)


def build_mavil_stage2(
    size: str = "base",
    teacher: MAViL | str | Path | dict | None = None,
    target: str = "fusion",
    target_norm: bool = False,
    teacher_kw: dict | None = None,
    **kw,
) -> MAViLStage2:
    """Student (feature targets) + frozen teacher from a model, a checkpoint path or a state.

    ``teacher=None`` builds a randomly initialised teacher (tests / benchmarks only).
    ``kw`` configure the student; ``teacher_kw`` (default: the same) the teacher.
    """
    student_kw = {"size": size, **kw, "target": "features"}
    t_kw = {"size": size, **{k: v for k, v in kw.items() if k != "target_dim"}}
    t_kw.update(teacher_kw or {})
    t_kw.pop("target", None)
    if isinstance(teacher, MAViL):
        teacher_model = teacher
    elif teacher is None:
        teacher_model = MAViL(**{**t_kw, "with_decoders": False})
    else:
        teacher_model = load_teacher(teacher, **t_kw)
    student_kw.setdefault("target_dim", teacher_model.dim)
    return MAViLStage2(MAViL(**student_kw), teacher_model, target, target_norm, student_kw)
