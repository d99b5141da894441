"""`evaluate protocol esc50-5fold` end to end on the ESC-50 fixture store (tiny recipe, a
few steps per fold): five fine-tunes on folds != k scored on fold k, one report with the
mean and std over folds; a re-run resumes from the finished rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from short_clip_fixtures import make_esc50

from eval.cli import main as evaluate
from pipeline.cli import main as pipeline
from store import open_store

FAST = ["train.max_steps=2", "optim.epochs=1", "data.batch_size=4", "optim.batch_size=4",
        "train.log_every=1"]


@pytest.fixture(scope="module")
def esc_store(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> str:
    root = make_esc50(tmp_path_factory.mktemp("esc"), media_dir)
    out = str(tmp_path_factory.mktemp("esc_store") / "store")
    assert pipeline(["build-esc50", "--root", str(root), "--out", out, "--engine", "local",
                     "--workers", "2", "--no-progress"]) == 0
    return out


def test_esc50_5fold_protocol(esc_store: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cv"
    args = ["protocol", "esc50-5fold", "--store", esc_store, "--out", str(out), *FAST]
    assert evaluate(args) == 0
    report = json.loads((out / "report.json").read_text())
    rounds = report["rounds"]
    assert [r["split"] for r in rounds] == [f"fold{k}" for k in range(1, 6)]
    for k, r in enumerate(rounds, start=1):
        assert f"fold{k}" not in r["train_split"].split(",")
        assert len(r["train_split"].split(",")) == 4 and r["clips"] == 2
        assert r["top1"] in (0.0, 0.5, 1.0)  # 2 test clips per fold
        cfg = (Path(r["run"]) / "config.yaml").read_text()
        assert f"split: {r['train_split']}" in cfg and "audio_frames: 512" in cfg
    top1 = np.array([r["top1"] for r in rounds])
    assert report["top1_mean"] == pytest.approx(top1.mean())
    assert report["top1_std"] == pytest.approx(top1.std(ddof=1))
    md = (out / "report.md").read_text()
    assert "fold5" in md and "std" in md
    assert "esc50-5fold: top-1" in capsys.readouterr().out
    # a re-run finds every round scored and only rewrites the report
    mtimes = [Path(r["run"]).joinpath("summary.json").stat().st_mtime for r in rounds]
    assert evaluate(args) == 0
    assert mtimes == [Path(r["run"]).joinpath("summary.json").stat().st_mtime for r in rounds]


def test_protocol_needs_folds(tmp_path: Path, esc_store: str,
                              capsys: pytest.CaptureFixture) -> None:
    assert open_store(esc_store).filter(split="test").num_rows == 0
    rc = evaluate(["protocol", "spc", "--store", esc_store, "--out", str(tmp_path / "x"), *FAST])
    assert rc == 2 and "no clips" in capsys.readouterr().err


def test_spc_protocol(tmp_path: Path, shared_dir: Path) -> None:
    """`protocol spc` on the Speech Commands fixture: train split -> top-1 on the test list
    (4 clips), the store's 128 frames as the model input."""
    from short_clip_fixtures import make_speechcommands

    root = make_speechcommands(tmp_path / "spc", shared_dir, "v0.02")
    store = str(tmp_path / "store")
    assert pipeline(["build-speechcommands", "--root", str(root), "--out", store, "--engine",
                     "local", "--workers", "2", "--no-progress"]) == 0
    out = tmp_path / "spc_out"
    assert evaluate(["protocol", "spc", "--store", store, "--out", str(out), *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    (r,) = report["rounds"]
    assert r["split"] == "test" and r["train_split"] == "train" and r["clips"] == 4
    assert r["top1"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert "audio_frames: 128" in (Path(r["run"]) / "config.yaml").read_text()
