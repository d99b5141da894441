"""Optimiser groups and schedule against re-derivations of the MAE / AudioMAE code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from train.config import load_config
from train.data import DataError, accumulation
from train.models import build_model
from train.optim import build_optimizer, lr_at, param_groups, peak_lr, resolve_hparams


def mae_adjust_learning_rate(epoch: float, lr: float, min_lr: float, warmup: float,
                             epochs: float) -> float:
    """MAE util/lr_sched.py adjust_learning_rate, re-written from its formula."""
    if epoch < warmup:
        return lr * epoch / warmup
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup)
                                                          / (epochs - warmup)))


def test_schedule_matches_mae_per_iteration() -> None:
    spe, lr, min_lr, warmup, epochs = 37, 1e-3, 1e-6, 4, 20
    got = np.array([lr_at(s, spe, lr, min_lr, warmup, epochs) for s in range(spe * epochs)])
    ref = np.array([mae_adjust_learning_rate(s / spe, lr, min_lr, warmup, epochs)
                    for s in range(spe * epochs)])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)
    assert got[0] == 0 and got.max() == pytest.approx(lr, rel=1e-3)
    assert got[-1] == pytest.approx(min_lr, abs=1e-7)
    assert peak_lr(2e-4, 512) == pytest.approx(4e-4)  # MAViL: lr_eff = lr_base x 512 / 256


def _groups_by_name(model: torch.nn.Module, groups: list[dict]) -> dict[str, dict]:
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g for g in groups for p in g["params"]}


def test_no_decay_on_norms_biases_tokens() -> None:
    model = build_model("mavil", "tiny", fusion="mbt", audio_size=(64, 128), img_size=32,
                        num_frames=2)
    by_name = _groups_by_name(model, param_groups(model, 1e-5))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        expect = 0.0 if (p.ndim <= 1 or name.rsplit(".", 1)[-1] in
                         ("cls_token", "mask_token", "bottleneck")) else 1e-5
        assert by_name[name]["weight_decay"] == expect, name
    assert by_name["fusion.bottleneck"]["weight_decay"] == 0.0
    # the MAE pre-training code's effective rule (timm add_weight_decay): only 1-d exempt
    timm_like = _groups_by_name(model, param_groups(model, 1e-5, decay_tokens=True))
    assert timm_like["audio_encoder.cls_token"]["weight_decay"] == 1e-5
    assert timm_like["audio_encoder.blocks.0.norm1.weight"]["weight_decay"] == 0.0


def test_layer_decay_matches_mae_param_groups_lrd() -> None:
    model = build_model("mavil_audio_ft", "tiny", num_classes=3, audio_size=(64, 128))
    ld, depth = 0.75, 2
    by_name = _groups_by_name(model, param_groups(model, 1e-5, layer_decay=ld))
    num_layers = depth + 1  # MAE lr_decay.py: len(blocks) + 1; scale = ld ** (L - layer_id)
    for name, group in by_name.items():
        if name.startswith("audio_encoder.blocks."):
            layer = int(name.split(".")[2]) + 1
        elif name.startswith(("audio_encoder.patch_embed", "audio_encoder.cls_token")):
            layer = 0
        else:
            layer = num_layers
        assert group["lr_scale"] == pytest.approx(ld ** (num_layers - layer)), name


def test_video_lr_half_for_av_finetuning_only() -> None:
    av = build_model("mavil_av_ft", "tiny", num_classes=3, audio_size=(64, 128), img_size=32,
                     num_frames=2)
    cfg = load_config("finetune", "mavil_as20k")
    assert cfg.optim.video_lr_scale == 0.5
    opt = build_optimizer(av, cfg.optim, "finetune")
    by_name = _groups_by_name(av, opt.param_groups)
    assert by_name["video_encoder.blocks.0.attn.qkv.weight"]["lr_scale"] == 0.5
    assert by_name["audio_encoder.blocks.0.attn.qkv.weight"]["lr_scale"] == 1.0
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["weight_decay"] == 1e-5


def test_presets() -> None:
    cfg = load_config("finetune", "audio_mae")
    assert resolve_hparams(cfg.optim, "finetune") == ((0.9, 0.999), 5e-4)
    assert resolve_hparams(load_config("stage1", "audio_mae").optim, "stage1") == (
        (0.9, 0.95), 1e-4)
    assert resolve_hparams(load_config("stage1", "mavil_as2m").optim, "stage1") == (
        (0.9, 0.95), 1e-5)


def test_accumulation_to_effective_batch() -> None:
    assert accumulation(512, 8, 64) == 1
    assert accumulation(512, 8, 8) == 8
    assert accumulation(4, 1, 2) == 2
    with pytest.raises(DataError, match="not a multiple"):
        accumulation(512, 6, 8)
