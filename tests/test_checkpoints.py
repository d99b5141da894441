"""Our checkpoint files: plain state dicts, atomic writes, weights_only loads, encoder export."""

from __future__ import annotations

import pickle

import pytest
import torch

from train.checkpoints import (
    CheckpointError,
    encoder_state_dict,
    load_checkpoint,
    load_into,
    read_public_state_dict,
    save_checkpoint,
)
from train.models import build_model
from train.models.cav_mae import build_cav_mae, build_cav_mae_ft
from train.models.uni_mae import build_audio_mae

torch.set_num_threads(1)


class NotATensor:  # a pickled object that weights_only loading must refuse
    pass


def test_roundtrip_keeps_every_tensor_and_plain_meta(tmp_path):
    model = build_cav_mae("tiny")
    wrapped = torch.nn.DataParallel(model)                     # saved without "module."
    path = save_checkpoint(tmp_path / "run" / "ckpt.pt", wrapped, {"epoch": 3, "lr": [1e-4]})
    state, meta = load_checkpoint(path)
    assert meta["epoch"] == 3 and meta["lr"] == [1e-4] and meta["format_version"] == 1
    ref = model.state_dict()
    assert state.keys() == ref.keys()
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    fresh = build_cav_mae("tiny")
    info = load_into(fresh, path)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert torch.equal(fresh.blocks_u[0].norm1_a.weight, model.blocks_u[0].norm1_a.weight)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left


def test_meta_must_be_plain(tmp_path):
    with pytest.raises(CheckpointError, match="plain types"):
        save_checkpoint(tmp_path / "x.pt", build_audio_mae("tiny"), {"bad": object()})
    assert not list(tmp_path.iterdir())


def test_bad_files_fail_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    no_model = tmp_path / "no_model.pt"
    torch.save({"weights": {"a": torch.zeros(1)}}, no_model)
    with pytest.raises(CheckpointError, match="no_model.pt.*'model'"):
        load_checkpoint(no_model)
    mixed = tmp_path / "mixed.pt"
    torch.save({"model": {"a": torch.zeros(1), "b": 3}}, mixed)
    with pytest.raises(CheckpointError, match="mixed.pt.*non-tensor"):
        load_checkpoint(mixed)
    unsafe = tmp_path / "unsafe.pt"
    with unsafe.open("wb") as fh:
        pickle.dump({"model": {"a": NotATensor()}}, fh)
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        load_checkpoint(unsafe)
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        read_public_state_dict(unsafe)
    newer = tmp_path / "newer.pt"
    torch.save({"model": {"a": torch.zeros(1)}, "meta": {"format_version": 99}}, newer)
    with pytest.raises(CheckpointError, match="newer.pt.*newer version"):
        load_checkpoint(newer)


def test_load_into_wrong_model_names_file_and_key(tmp_path):
    path = save_checkpoint(tmp_path / "cav.pt", build_cav_mae("tiny"))
    with pytest.raises(CheckpointError, match="cav.pt: does not fit CAVMAE: .*modality_a"):
        load_into(build_cav_mae("tiny", dim=32, heads=4), path)
    with pytest.raises(CheckpointError, match="cav.pt: .*missing keys .*blocks_a.1"):
        load_into(build_cav_mae("tiny", modality_depth=2), path)


def test_encoder_weights_feed_finetuning(tmp_path):
    pre = build_cav_mae("tiny")
    enc = encoder_state_dict(pre)
    assert enc and not any(k.startswith(("decoder", "mask_token")) for k in enc)
    assert "blocks_u.0.norm1_v.weight" in enc and "modality_a" in enc
    path = save_checkpoint(tmp_path / "encoder.pt", enc, {"encoder_only": True})
    state, meta = load_checkpoint(path)
    assert meta["encoder_only"]
    assert set(state) == set(enc)
    ft = build_cav_mae_ft("tiny", num_classes=5)
    info = load_into(ft, path, strict=False)
    assert sorted(info["missing_keys"]) == ["mlp_head.0.bias", "mlp_head.0.weight",
                                            "mlp_head.1.bias", "mlp_head.1.weight"]
    assert info["unexpected_keys"] == []
    assert torch.equal(ft.blocks_v[0].mlp.fc1.weight, pre.blocks_v[0].mlp.fc1.weight)
    uni = build_audio_mae("tiny")
    assert set(encoder_state_dict(uni)) == {k for k in uni.state_dict()
                                            if k.startswith("audio_encoder.")}
    stage2 = build_model("mavil_stage2", "tiny")               # MAViL naming, nested
    kept = {".".join(k.split(".")[:2]) for k in encoder_state_dict(stage2)}
    assert kept == {"student.audio_encoder", "student.video_encoder", "student.fusion"}
