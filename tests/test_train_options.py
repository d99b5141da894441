"""Trainer options: ImageNet-MAE video initialisation, non-finite losses (stop / skip), and
the peers' tiny recipes through every stage they have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.checkpoint_fixtures import image_mae_shapes, materialise
from tests.train_fixtures import train_store  # noqa: F401 - fixture
from train.cli import main
from train.resume import load_state
from train.trained import load_trained

torch.set_num_threads(1)


def test_video_branch_from_an_image_mae_file(train_store: str, tmp_path: Path) -> None:  # noqa: F811
    """init.video: an official-layout MAE state dict maps onto the video encoder (kernel
    inflated in time); the run's config and summary say which file."""
    state = materialise(image_mae_shapes(dim=64, depth=2, img=64, full=False))
    torch.save({"model": state}, tmp_path / "mae_pretrain_vit_tiny.pth")
    out = tmp_path / "run"
    assert main(["run", "stage1", "--store", train_store, "--out", str(out), "--recipe", "tiny",
                 f"init.video={tmp_path / 'mae_pretrain_vit_tiny.pth'}",
                 "train.max_steps=1"]) == 0  # step 1 has lr 0 (warm-up): weights as loaded
    model = load_state(out / "checkpoints" / "last.pt")["model"]
    torch.testing.assert_close(model["video_encoder.blocks.1.mlp.fc2.weight"],
                               state["blocks.1.mlp.fc2.weight"])
    summary = json.loads((out / "summary.json").read_text())
    assert "mae_pretrain_vit_tiny.pth" in summary["video_init"]


def test_non_finite_loss_stops_or_skips(train_store: str, tmp_path: Path,  # noqa: F811
                                        capsys: pytest.CaptureFixture) -> None:
    blow_up = ["--recipe", "tiny", "optim.base_lr=1e12", "optim.warmup_epochs=0.01",
               "train.max_steps=6"]
    capsys.readouterr()
    assert main(["run", "stage1", "--store", train_store, "--out", str(tmp_path / "stop"),
                 *blow_up]) == 2
    err = capsys.readouterr().err.strip()
    assert "non-finite loss" in err and "step " in err and "loss_recon=" in err, err
    assert main(["run", "stage1", "--store", train_store, "--out", str(tmp_path / "skip"),
                 *blow_up, "train.nonfinite=skip"]) == 0
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    assert summary["skipped_steps"] > 0 and summary["steps"] == 6


@pytest.mark.parametrize("model,mode", [("cav_mae", "av"), ("av_mae", "av"),
                                        ("audio_mae", "audio"), ("video_mae", "video")])
def test_peer_recipes(train_store: str, tmp_path: Path, model: str, mode: str) -> None:  # noqa: F811
    short = ["--recipe", "tiny", "train.max_steps=2"]
    assert main(["run", "stage1", "--store", train_store, "--out", str(tmp_path / "pt"),
                 "--model", model, *short]) == 0
    assert main(["run", "finetune", "--store", train_store, "--out", str(tmp_path / "ft"),
                 "--init", str(tmp_path / "pt"), "--mode", mode, *short]) == 0
    _, cfg = load_trained(tmp_path / "pt")
    assert cfg["model"]["name"] == model
    _, fcfg = load_trained(tmp_path / "ft")
    assert fcfg["stage"] == "finetune" and fcfg["model"]["kwargs"]["num_classes"] == 5
