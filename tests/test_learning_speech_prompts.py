"""The real learning check (issue 14): tiny audio fine-tunes on speech_prompts (300 real
telephone prompts, 5 languages, 225 train / 75 eval, prior 20 %) from random weights and
from a tiny audio-MAE stage-1 checkpoint, with the project's own commands
(`pipeline build --target-frames 256`, `train run stage1`, `evaluate protocol holdout`).

Measured eval top-1 over seeds 0, 1, 2 (recipe tiny_audio_finetune, 30 epochs = 840 steps;
shared 2-core dev box; figures in the README):
    from scratch:           85.3 / 90.7 / 89.3 %  (mean 88.4, std 2.8)
    from tiny stage 1:      64.0 / 64.0 / 65.3 %  (mean 64.4, std 0.8; stage 1 seed 0)
The thresholds sit ~15 points under the lowest seed (5x the seed std, 11 of 75 eval clips)
and far above the 20 % prior. The tiny stage 1 (10 epochs of audio-MAE on the same 225
clips) starts the fine-tune worse than random weights at this size; the check is that both
learn the languages, not that pre-training helps here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.cli import main as evaluate
from pipeline.cli import main as pipeline
from train.cli import main as train

SCRATCH_MIN = 0.70
STAGE1_MIN = 0.50


@pytest.fixture(scope="module")
def prompts_store(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> str:
    out = str(tmp_path_factory.mktemp("prompts") / "store")
    manifest = shared_dir / "data" / "speech_prompts" / "manifest.csv"
    assert pipeline(["build", "--manifest", str(manifest), "--out", out, "--name",
                     "speech_prompts", "--target-frames", "256", "--engine", "local",
                     "--workers", "2", "--shard-size", "100", "--no-progress"]) == 0
    return out


def _holdout(store: str, out: Path, init: str) -> dict:
    assert evaluate(["protocol", "holdout", "--store", store, "--out", str(out), "--init",
                     init, "--train-split", "train", "--test-split", "eval"]) == 0
    return json.loads((out / "report.json").read_text())


def test_from_scratch(prompts_store: str, tmp_path: Path) -> None:
    report = _holdout(prompts_store, tmp_path / "scratch", "scratch")
    assert report["rounds"][0]["clips"] == 75
    assert report["top1_mean"] >= SCRATCH_MIN, report["top1_mean"]


def test_from_tiny_stage1(prompts_store: str, tmp_path: Path) -> None:
    pt = tmp_path / "pt"
    assert train(["run", "stage1", "--store", prompts_store, "--out", str(pt), "--recipe",
                  "tiny_audio", "--device", "cpu"]) == 0
    report = _holdout(prompts_store, tmp_path / "ft", str(pt))
    assert report["init"] == str(pt)
    assert report["top1_mean"] >= STAGE1_MIN, report["top1_mean"]
