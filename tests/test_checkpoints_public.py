"""Public checkpoints (MAE, AudioMAE, CAV-MAE) mapped onto our models, key by key.

The weights cannot be downloaded here, so the state dicts are built with the official key
names and shapes (tests/checkpoint_fixtures.py) and marker values. Every test checks
coverage (each source key consumed or ignored with a reason, each target key filled or
reported missing) and where the values landed.
"""

from __future__ import annotations

import argparse
import re

import pytest
import torch
import torch.nn.functional as F
from checkpoint_fixtures import (
    audio_mae_shapes,
    cav_mae_shapes,
    image_mae_shapes,
    materialise,
)

from train.checkpoints import (
    CheckpointError,
    load_public_checkpoint,
    map_public_state_dict,
)
from train.models.cav_mae import build_cav_mae, build_cav_mae_ft
from train.models.mavil import MAViL
from train.models.uni_mae import build_audio_mae

torch.set_num_threads(1)


def on_cpu_uninitialised(fn):
    with torch.device("meta"):
        model = fn()
    return model.to_empty(device="cpu")


def check_coverage(src, model, mapped, report):
    sources = {v.split(" (")[0] for v in report.loaded.values()}
    assert sources | set(report.ignored) == set(src)
    assert not sources & set(report.ignored)
    assert all(report.ignored.values())                         # every ignore has a reason
    target = model.state_dict()
    assert set(report.loaded) | set(report.missing) == set(target)
    assert set(mapped) == set(report.loaded)
    assert all(mapped[k].shape == target[k].shape for k in mapped)


H_DEC = torch.randn(2, 8, 64, 512, generator=torch.Generator().manual_seed(0))  # f-major


def official_audio_prediction(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """CAV-MAE forward_decoder + unpatchify(c=1, h=8, w=64) on frequency-major features,
    transposed to [B, 1, T, F]."""
    pred = H_DEC.reshape(2, 512, -1) @ weight.t() + bias
    img = torch.einsum("nhwpqc->nchpwq", pred.reshape(2, 8, 64, 16, 16, 1))
    return img.reshape(2, 1, 128, 1024).transpose(2, 3)


def our_audio_prediction(model, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    pred = H_DEC.transpose(1, 2).reshape(2, 512, -1) @ weight.t() + bias   # time-major
    return model.patch_embed_a.unpatchify(pred)


def test_image_mae_vit_b_initialises_cav_mae_like_adapt_vmae_weights():
    src = materialise(image_mae_shapes())                       # mae_pretrain_vit_base_full
    assert src["patch_embed.proj.weight"].shape == (768, 3, 16, 16)
    assert src["pos_embed"].shape == (1, 197, 768)
    model = on_cpu_uninitialised(lambda: build_cav_mae("base"))
    mapped, report = map_public_state_dict(src, model, with_decoder=True)
    check_coverage(src, model, mapped, report)
    assert set(report.ignored) == {"cls_token"}
    assert sorted(report.missing) == sorted([
        "modality_a", "modality_v", "pos_embed_a", "decoder_modality_a",
        "decoder_modality_v", "decoder_pos_embed_a"])          # 196 vs 512 positions
    for i in (0, 10):
        for branch in ("blocks_a", "blocks_v"):
            assert torch.equal(mapped[f"{branch}.{i}.attn.qkv.weight"],
                               src[f"blocks.{i}.attn.qkv.weight"])
    for name in ("norm1", "norm1_a", "norm1_v", "norm2_a"):     # layer 12 -> joint layer
        base = name[:5]
        assert torch.equal(mapped[f"blocks_u.0.{name}.weight"], src[f"blocks.11.{base}.weight"])
    assert torch.equal(mapped["blocks_u.0.mlp.fc2.bias"], src["blocks.11.mlp.fc2.bias"])
    for n in ("norm_a", "norm_v", "norm"):
        assert torch.equal(mapped[f"{n}.bias"], src["norm.bias"])
    w = src["patch_embed.proj.weight"]
    assert torch.equal(mapped["patch_embed_v.proj.weight"], w)
    # audio kernel = RGB sum, image rows read as frequency (CAV-MAE feeds [B,1,F,T])
    assert torch.allclose(mapped["patch_embed_a.proj.weight"],
                          w.sum(1, keepdim=True).transpose(2, 3))
    assert torch.equal(mapped["pos_embed_v"], src["pos_embed"][:, 1:])
    assert torch.equal(mapped["decoder_pos_embed_v"], src["decoder_pos_embed"][:, 1:])
    # adapt_vmae_weights.py: decoder_pred_a <- decoder_pred[:256], read by CAV-MAE as
    # (freq, time) patch pixels. The official prediction, unpatchified to its [B,1,F,T]
    # spectrogram, must equal ours unpatchified to [B,1,T,F], transposed.
    official_pred = official_audio_prediction(src["decoder_pred.weight"][:256],
                                              src["decoder_pred.bias"][:256])
    ours_pred = our_audio_prediction(model, mapped["decoder_pred_a.weight"],
                                     mapped["decoder_pred_a.bias"])
    assert torch.allclose(ours_pred, official_pred, atol=1e-4, rtol=1e-5)
    assert torch.equal(mapped["decoder_pred_v.weight"], src["decoder_pred.weight"])
    assert torch.equal(mapped["decoder_blocks.7.norm2.weight"],
                       src["decoder_blocks.7.norm2.weight"])


def test_image_mae_initialises_the_mavil_video_encoder_inflated(tmp_path):
    src = materialise(image_mae_shapes(dim=64, depth=2, dec_dim=32, dec_depth=1))
    path = tmp_path / "mae_pretrain_vit_tiny.pth"
    # as main_pretrain.py's save_model writes it (args is an argparse.Namespace)
    torch.save({"model": src, "epoch": 799, "args": argparse.Namespace(mask_ratio=0.75)}, path)
    model = MAViL("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_public_checkpoint(model, path, require=["video_encoder.blocks."])
    mapped = {k: model.state_dict()[k] for k in report.loaded}
    check_coverage(src, model, mapped, report)
    assert all(k.startswith("video_encoder.") for k in report.loaded)
    assert "separable" in report.loaded["video_encoder.pos_embed"]
    assert "not requested" in report.ignored["decoder_pred.weight"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in report.missing)
    assert torch.equal(after["video_encoder.cls_token"], src["cls_token"])
    assert torch.equal(after["video_encoder.blocks.1.mlp.fc1.weight"],
                       src["blocks.1.mlp.fc1.weight"])
    # a static clip: each frame's tokens minus the temporal term equal the image model's
    # block input, MAE forward_encoder's patch_embed(x) + pos_embed[:, 1:] (here at the
    # 224-px grid the image model was trained on)
    frame = torch.randn(2, 3, 224, 224)
    clip = frame[:, None].expand(2, 8, 3, 224, 224)
    with torch.no_grad():
        tokens = model.video_encoder.embed(clip).reshape(2, 4, 196, 64)
    image_input = F.conv2d(frame, src["patch_embed.proj.weight"], src["patch_embed.proj.bias"],
                           stride=16).flatten(2).transpose(1, 2) + src["pos_embed"][:, 1:]
    omega = 1.0 / 10000 ** (torch.arange(32, dtype=torch.float64) / 32)   # 1-D sin-cos, D=64
    angle = torch.arange(4, dtype=torch.float64)[:, None] * omega[None]
    temporal = torch.cat([angle.sin(), angle.cos()], dim=1).float()     # [4 steps, 64]
    for t in range(4):
        assert torch.allclose(tokens[:, t] - temporal[t], image_input, atol=1e-3, rtol=1e-4)


def test_audio_mae_pretrained_maps_encoder_and_reports_swin_decoder():
    src = materialise(audio_mae_shapes(depth=2))                # released file: Swin decoder
    assert src["patch_embed.proj.weight"].shape == (768, 1, 16, 16)
    assert src["pos_embed"].shape == (1, 513, 768)
    model = build_audio_mae(dict(dim=768, depth=2, heads=12))
    mapped, report = map_public_state_dict(src, model, with_decoder=True)
    check_coverage(src, model, mapped, report)
    assert report.layout == "audio_mae"
    swin = {k for k in src if k.startswith("decoder_blocks.")}
    assert set(report.ignored) == swin
    assert all("Swin" in report.ignored[k] for k in swin)
    assert set(report.missing) == {k for k in model.state_dict()
                                   if k.startswith("audio_decoder.blocks.")}
    # AudioMAE tokens are time-major like ours: everything copies straight across
    for ours, theirs in (("audio_encoder.patch_embed.proj.weight", "patch_embed.proj.weight"),
                         ("audio_encoder.pos_embed", "pos_embed"),
                         ("audio_encoder.cls_token", "cls_token"),
                         ("audio_encoder.blocks.1.attn.proj.weight", "blocks.1.attn.proj.weight"),
                         ("audio_decoder.pos_embed", "decoder_pos_embed"),
                         ("audio_decoder.pred.weight", "decoder_pred.weight"),
                         ("audio_decoder.embed.bias", "decoder_embed.bias")):
        assert torch.equal(mapped[ours], src[theirs])


def _official_cav_state(**kw):
    return materialise(cav_mae_shapes(dim=64, specific=1, joint=1, dec_dim=32, dec_depth=1,
                                      **kw))


def test_cav_mae_official_pretrained_file_maps_onto_cav_mae(tmp_path):
    src = _official_cav_state()
    assert all(k.startswith("module.") for k in src)
    path = tmp_path / "cav-mae-scale++.pth"
    torch.save(src, path)                                       # bare DataParallel state dict
    model = build_cav_mae("tiny")
    report = load_public_checkpoint(model, path)
    plain = {k.removeprefix("module."): v for k, v in src.items()}
    state = model.state_dict()
    check_coverage(plain, model, {k: state[k] for k in report.loaded}, report)
    assert report.missing == []
    assert set(report.ignored) == {k for k in plain if k.startswith(
        ("blocks_a.", "blocks_v.", "decoder_blocks.")) and re.search(r"\.norm[12]_[av]\.", k)}
    assert len(report.ignored) == 3 * 8                  # 4 unused LNs x 2 tensors x 3 blocks
    assert torch.equal(state["blocks_u.0.norm1_v.bias"], plain["blocks_u.0.norm1_v.bias"])
    assert torch.equal(state["patch_embed_v.proj.weight"], plain["patch_embed_v.proj.weight"])

    # Same numbers as the official forward: it transposes the fbank to [B,1,F,T], so its
    # tokens are frequency-major (8 x 64); ours are time-major (64 x 8).
    fbank = torch.randn(2, 1024, 128)
    official = F.conv2d(fbank.unsqueeze(1).transpose(2, 3), plain["patch_embed_a.proj.weight"],
                        plain["patch_embed_a.proj.bias"], stride=16)     # [2, D, 8, 64]
    official = official.flatten(2).transpose(1, 2) + plain["pos_embed_a"]  # f * 64 + t
    official = official.reshape(2, 8, 64, -1).transpose(1, 2).reshape(2, 512, -1)
    with torch.no_grad():
        ours = model.patch_embed_a(fbank.unsqueeze(1)) + model.pos_embed_a
    assert torch.allclose(ours, official, atol=1e-2, rtol=1e-5)
    # decoder_pred_a: the official unpatchify of its prediction == our unpatchify of ours
    h = torch.randn(2, 8, 64, 32)                               # decoder features, f-major
    pred = h.reshape(2, 512, 32) @ plain["decoder_pred_a.weight"].t() + plain["decoder_pred_a.bias"]
    img = torch.einsum("nhwpqc->nchpwq", pred.reshape(2, 8, 64, 16, 16, 1)).reshape(2, 1, 128, 1024)
    with torch.no_grad():
        ours = model.decoder_pred_a(h.transpose(1, 2).reshape(2, 512, 32))
    assert torch.allclose(model.patch_embed_a.unpatchify(ours), img.transpose(2, 3),
                          atol=1e-2, rtol=1e-5)


def test_cav_mae_official_files_onto_the_finetuning_model():
    model = build_cav_mae_ft("tiny", num_classes=527)
    src = _official_cav_state(finetuned_classes=309)            # a VGGSound fine-tuned file
    mapped, report = map_public_state_dict(src, model)
    check_coverage({k.removeprefix("module."): v for k, v in src.items()}, model, mapped, report)
    assert sorted(report.missing) == ["mlp_head.1.bias", "mlp_head.1.weight"]
    assert "head size differs" in report.ignored["mlp_head.1.weight"]
    assert torch.equal(mapped["mlp_head.0.weight"], src["module.mlp_head.0.weight"])
    mapped, report = map_public_state_dict(_official_cav_state(), model)  # pre-trained file
    assert sorted(report.missing) == sorted(f"mlp_head.{i}.{p}" for i in (0, 1)
                                            for p in ("weight", "bias"))
    assert report.ignored["decoder_embed.weight"] == "decoder is dropped for fine-tuning"


def test_bad_public_checkpoints_name_the_file(tmp_path):
    model = build_cav_mae("tiny")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_public_checkpoint(model, junk)
    unknown = tmp_path / "unknown.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, unknown)
    with pytest.raises(CheckpointError, match="unknown.pth.*layout"):
        load_public_checkpoint(model, unknown)
    src = _official_cav_state()
    src["module.blocks_a.0.attn.qkv.weight"] = torch.zeros(5, 5)
    wrong = tmp_path / "wrong_shape.pth"
    torch.save(src, wrong)
    with pytest.raises(CheckpointError, match="wrong_shape.pth.*blocks_a.0.attn.qkv.weight"):
        load_public_checkpoint(model, wrong)
    mae = tmp_path / "mae_encoder_only.pth"
    torch.save({"model": materialise(image_mae_shapes(dim=64, depth=1, full=False))}, mae)
    with pytest.raises(CheckpointError, match="mae_encoder_only.pth.*unfilled"):
        load_public_checkpoint(MAViL("tiny"), mae, require=["video_encoder.blocks.1."])


def test_mapping_report_command(tmp_path, capsys):
    from train.checkpoints import main

    path = tmp_path / "official_cav.pth"
    torch.save(_official_cav_state(), path)
    assert main([str(path), "--model", "cav_mae_ft", "--size", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "decoder is dropped for fine-tuning" in out and "'mlp_head.*': 4" in out
    assert main([str(tmp_path / "absent.pth"), "--model", "cav_mae", "--size", "tiny"]) == 1
    assert "absent.pth: checkpoint file not found" in capsys.readouterr().out
    # the three public layouts with the new tables: MAE -> MAViL video (separable), AudioMAE
    # -> Audio-MAE (its table copies as is), MAE -> CAV-MAE (decoder_pred_a reordered)
    mae = tmp_path / "mae_tiny.pth"
    torch.save({"model": materialise(image_mae_shapes(dim=64, depth=2, dec_dim=32,
                                                      dec_depth=1))}, mae)
    assert main([str(mae), "--model", "mavil", "--size", "tiny"]) == 0
    assert "'pos_embed': 1" not in capsys.readouterr().out.split("ignored", 1)[-1]
    audio = tmp_path / "audiomae_tiny.pth"
    torch.save({"model": materialise(audio_mae_shapes(dim=64, depth=2, dec_dim=32,
                                                      dec_depth=1))}, audio)
    assert main([str(audio), "--model", "audio_mae", "--size", "tiny", "--with-decoder"]) == 0
    assert "filled" in capsys.readouterr().out
    assert main([str(mae), "--model", "cav_mae", "--size", "tiny", "--with-decoder"]) == 0
    assert "ignored" in capsys.readouterr().out
