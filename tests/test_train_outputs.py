"""What a real tiny run leaves behind, end to end on the pipeline-built store: the logs a
user reads, `train export` -> the trainer's fine-tune init, `train average` -> the contract
reader, and `train bench trainer` producing its figures (no timing is asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_fixtures import train_store  # noqa: F401 - the session fixture

from train.bench import bench_trainer, report
from train.cli import main as train_main
from train.config import load_config
from train.export import main_average, main_export
from train.observe import read_metrics
from train.stages import build_finetune
from train.trained import load_trained


@pytest.fixture(scope="module")
def tiny_run(train_store, tmp_path_factory) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("obs") / "run"
    # 2 epochs = 2 epoch files (the tiny recipe takes a few optimizer steps per epoch)
    assert train_main(["run", "stage1", "--store", train_store, "--out", str(run),
                       "--recipe", "tiny", "optim.epochs=2", "optim.batch_size=8"]) == 0
    return run


def test_run_logs(tiny_run):
    spe = OmegaConf.load(tiny_run / "config.yaml").meta.steps_per_epoch
    train = [r for r in read_metrics(tiny_run) if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 2 * spe + 1))  # log_every: 1
    assert [r["epoch"] for r in train] == [1] * spe + [2] * spe
    for key in ("loss", "loss_recon_audio", "loss_recon_video", "loss_inter", "loss_intra",
                "lr", "samples_per_s", "data_wait"):
        assert all(math.isfinite(r[key]) for r in train), key
    acc = EventAccumulator(str(tiny_run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss_inter")] == list(range(1, 2 * spe + 1))
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2 * spe
    assert Path(summary["checkpoint"]).is_file()


@pytest.mark.parametrize("mode", ["audio", "video", "av"])
def test_export_is_a_finetune_init(tiny_run, train_store, tmp_path, mode):  # noqa: F811
    enc = tmp_path / "encoder.pt"
    assert main_export([str(tiny_run), "--out", str(enc)]) == 0
    cfg = load_config("finetune", "tiny", [], {"data.store": train_store,
                                               "finetune.init": str(enc), "finetune.mode": mode})
    model, _, notes = build_finetune(cfg, 5)  # raises if any encoder key stays unfilled
    assert notes["init_stage"] == "stage1"
    source = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    loaded = {k: v for k, v in model.state_dict().items()
              if k.startswith(("audio_encoder.", "video_encoder."))}
    assert loaded and all(torch.equal(v, source[k]) for k, v in loaded.items())


def test_average_of_the_run_loads(tiny_run, tmp_path):
    out = tmp_path / "wa.pt"
    assert main_average([str(tiny_run), "--epochs", "1:2", "--out", str(out)]) == 0
    model, cfg = load_trained(out)
    e1, e2 = (torch.load(tiny_run / "checkpoints" / f"epoch_{e:04d}.pt", weights_only=True)
              for e in (1, 2))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, (e1["model"][k] + e2["model"][k]) / 2, rtol=0, atol=1e-6)
    assert cfg["average"]["epochs"] == [1, 2]


# the AS-2M recipes leave the clip length to the store (data.audio_frames null)
@pytest.mark.parametrize("frames", ["256", "null"])
def test_bench_trainer_reports(train_store, frames):  # noqa: F811
    cfg = load_config("stage1", "tiny", ["optim.batch_size=8", f"data.audio_frames={frames}"],
                      {"data.store": train_store})
    r = bench_trainer(cfg, steps=2, warmup=1, device="cpu", num_batches=2)
    assert r["bare_s_per_step"] > 0 and r["trainer_s_per_step"] > 0
    spe = r["trainer"]["steps_per_epoch"]  # window: steps 2 and 3; epoch ends checkpoint
    assert r["trainer"]["checkpoints_in_window"] == sum(s % spe == 0 for s in (2, 3))
    assert 0 <= r["data_wait_fraction"] < 1
    text = report(r)
    assert "trainer overhead vs bare loop" in text and "data wait" in text
