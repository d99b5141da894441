"""AdamW parameter groups and the learning-rate schedule (MAViL Table 10, supplement B.3).

Hyper-parameters by ``optim.preset``:

| preset        | betas         | weight decay                      | source                        |
| ------------- | ------------- | --------------------------------- | ----------------------------- |
| table10       | (0.9, 0.95)   | 1e-5 (every column)               | MAViL Table 10                |
| audiomae_code | PT (0.9, 0.95), FT (0.9, 0.999) | PT 1e-4, FT 5e-4 | AudioMAE main_pretrain.py / main_finetune_as.py and run scripts |

(``optim.betas`` / ``optim.weight_decay`` set in a recipe win over the preset.)

Weight decay: none on biases and norm weights (every 1-d parameter) and on positional
embeddings (fixed sin-cos here, so not trained at all). Tokens - [CLS], the decoders'
[MASK], MBT's bottleneck tokens, CAV-MAE / AV-MAE modality embeddings - are NOT decayed by
default (the MAE fine-tuning code's ``no_weight_decay`` list holds ``cls_token`` and
``pos_embed``); ``optim.decay_tokens=true`` decays them as the MAE / AudioMAE pre-training
code does in effect (timm ``add_weight_decay`` only exempts 1-d parameters).

Learning rate: ``lr = base_lr * batch_size / 256`` with the effective batch (MAE's rule);
per optimizer step, linear warm-up over ``warmup_epochs`` then a half-cycle cosine down to
``min_lr`` at the end of ``epochs`` (MAE ``lr_sched.adjust_learning_rate``, fractional
epochs). Each group's lr is the schedule's times its ``lr_scale``: layer-wise decay
(``layer_decay ** (L + 1 - layer)``, MAE / AudioMAE ``param_groups_lrd``, 0.75 in AudioMAE
fine-tuning) and the 0.5 factor for the video encoder in audio+video fine-tuning (B.3).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

_TOKENS = ("cls_token", "mask_token", "bottleneck", "modality_a", "modality_v",
           "mask_token_a", "mask_token_v")
_BLOCK = re.compile(r"(?:^|\.)(?:audio_encoder|video_encoder|encoder)?\.?blocks(?:_[a-z])?\.(\d+)\.")
_EMBED = ("patch_embed", "cls_token", "pos_embed")


def resolve_hparams(cfg: Any, stage: str) -> tuple[tuple[float, float], float]:
    """(betas, weight_decay) from the preset, unless the recipe sets them."""
    finetune = stage == "finetune"
    if cfg.preset == "audiomae_code":
        betas, wd = ((0.9, 0.999), 5e-4) if finetune else ((0.9, 0.95), 1e-4)
    else:
        betas, wd = (0.9, 0.95), 1e-5
    if cfg.betas is not None:
        betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if cfg.weight_decay is not None:
        wd = float(cfg.weight_decay)
    return betas, wd


def decays(name: str, p: torch.Tensor, decay_tokens: bool = False) -> bool:
    """Whether weight decay applies to this parameter (see the module docstring)."""
    if p.ndim <= 1 or name.endswith("pos_embed") or "pos_embed" in name:
        return False
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _TOKENS or leaf.startswith(("cls_token", "mask_token")):
        return decay_tokens
    return True


def layer_id(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for encoder block i, ``num_layers + 1`` for the rest."""
    m = _BLOCK.search(name)
    if m and "decoder" not in name and not name.startswith("fusion"):
        return int(m.group(1)) + 1
    if any(part in name for part in _EMBED) and "decoder" not in name:
        return 0
    return num_layers + 1


def encoder_depth(model: nn.Module) -> int:
    ids = [int(m.group(1)) for n, _ in model.named_parameters()
           if (m := _BLOCK.search(n)) and "decoder" not in n and not n.startswith("fusion")]
    return max(ids) + 1 if ids else 0


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                 video_lr_scale: float = 1.0, decay_tokens: bool = False) -> list[dict]:
    """AdamW groups with ``weight_decay`` and ``lr_scale`` per group (see module docstring)."""
    depth = encoder_depth(model)
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = 1.0
        if layer_decay is not None and layer_decay != 1.0:
            scale = layer_decay ** (depth + 1 - layer_id(name, depth))
        if video_lr_scale != 1.0 and name.startswith("video_"):
            scale *= video_lr_scale
        groups.setdefault((decays(name, p, decay_tokens), scale), []).append(p)
    return [{"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
            for (decay, scale), ps in groups.items()]


def build_optimizer(model: nn.Module, cfg: Any, stage: str) -> torch.optim.AdamW:
    betas, wd = resolve_hparams(cfg, stage)
    groups = param_groups(model, wd, cfg.layer_decay, cfg.video_lr_scale, cfg.decay_tokens)
    return torch.optim.AdamW(groups, lr=float(cfg.lr), betas=betas, weight_decay=wd)


def peak_lr(base_lr: float, batch_size: int) -> float:
    """MAE's linear scaling rule: lr = base_lr x effective batch / 256."""
    return base_lr * batch_size / 256


def lr_at(step: int, steps_per_epoch: int, lr: float, min_lr: float, warmup_epochs: float,
          epochs: float) -> float:
    """The schedule's lr before optimizer step ``step`` (0-based), fractional epochs."""
    epoch = step / max(1, steps_per_epoch)
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    span = max(epochs - warmup_epochs, 1e-12)
    progress = min(1.0, (epoch - warmup_epochs) / span)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
