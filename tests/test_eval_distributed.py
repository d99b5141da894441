"""`evaluate run` under torchrun (2 ranks, gloo) and after a SIGKILL: each clip scored once,
the same predictions and metrics as one uninterrupted process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from eval_fixtures import save_checkpoint
from loader_fixtures import zarr_store  # noqa: F401
from test_eval_infer import SIZE, tiny

from eval.cli import main
from eval.infer import read_predictions

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(zarr_store, tmp_path_factory) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("ckd") / "av.pt"
    return save_checkpoint(path, "mavil_av_ft", "finetune", zarr_store,
                           model=tiny("mavil_av_ft"), num_classes=5, img_size=SIZE)


def evaluate_args(ckpt: Path, store: str, out: Path, part_size: int) -> list[str]:
    return ["run", "--ckpt", str(ckpt), "--store", store, "--out", str(out), "--split",
            "train", "--num-workers", "0", "--quiet", "--no-report", "--part-size",
            str(part_size), "--batch-size", "2"]


def env() -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    e.setdefault("MAVIL_SHARED", str(REPO.parent / "shared"))
    return e


def single(ckpt: Path, store: str, out: Path, part_size: int = 3) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "eval.cli", *evaluate_args(ckpt, store, out, part_size)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env(), cwd=REPO)


@pytest.fixture(scope="module")
def reference(ckpt, zarr_store, tmp_path_factory) -> Path:  # noqa: F811
    """One uninterrupted in-process run (parts of 1 clip)."""
    out = tmp_path_factory.mktemp("ref") / "straight"
    assert main(evaluate_args(ckpt, zarr_store, out, 1)) == 0
    return out


def by_id(out: Path) -> dict[str, np.ndarray]:
    ids, _, scores, _ = read_predictions(out)
    assert len(ids) == len(set(ids)), "a clip was scored twice"
    return dict(zip(ids, scores, strict=True))


def test_torchrun_two_ranks_score_each_clip_once(ckpt, zarr_store, reference,  # noqa: F811
                                                  tmp_path) -> None:
    # 12 clips in parts of 5: rank 0 scores parts 0 and 2 (5 + 2 clips), rank 1 part 1 - an
    # uneven tail that padding-based samplers would fill with duplicates
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "eval.cli", *evaluate_args(ckpt, zarr_store, tmp_path / "two", 5)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env(), cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    one, two = by_id(reference), by_id(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(two) == 12
    for cid in one:
        np.testing.assert_allclose(two[cid], one[cid], rtol=1e-5, atol=1e-6)
    m1 = json.loads((reference / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["protocol"]["world_size"] == 2 and m2["clips_scored"] == 12
    for key in ("mAP", "mAP_with_positives", "mAUC", "d_prime"):
        assert m2[key] == pytest.approx(m1[key], abs=1e-6)


def test_resume_after_sigkill_skips_done_parts(ckpt, zarr_store, reference,  # noqa: F811
                                               tmp_path, capsys) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "eval.cli", *evaluate_args(ckpt, zarr_store, out, 1)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
                            cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "parts").glob("part-*.parquet"))) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = len(list((out / "parts").glob("part-*.parquet")))
    assert 2 <= done < 12, f"the kill came too late ({done} of 12 parts on disk)"
    assert not (out / "predictions.parquet").exists()
    res = single(ckpt, zarr_store, out, part_size=1)
    assert res.returncode == 0, res.stderr
    assert f"resumed: {done} of 12 parts were already scored" in res.stderr
    a, b = by_id(out), by_id(reference)
    assert sorted(a) == sorted(b)
    for cid in a:
        np.testing.assert_allclose(a[cid], b[cid], rtol=1e-5, atol=1e-6)
    # another evaluation into the same directory is refused, not mixed in
    assert main(evaluate_args(ckpt, zarr_store, out, 2)) == 2
    assert "holds the parts of another evaluation" in capsys.readouterr().err
