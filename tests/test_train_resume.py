"""Exact resume: N steps straight == k steps, SIGKILL, re-run (bit-identical on CPU).

The killed run dies twice: once halfway through writing the checkpoint of step 4 (a torn
temp file, the previous checkpoint intact) and once right after the checkpoint of step 5,
in the middle of an epoch (3 steps per epoch); each re-run is the same command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.train_fixtures import train_store  # noqa: F401 - fixture
from train.resume import FAULT_ENV, load_state, step_files

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--recipe", "tiny", "optim.epochs=2", "data.batch_size=2", "optim.batch_size=4",
        "train.ckpt_every=1", "train.keep_last=10"]


def _run(store: str, out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    # every run in its own process with the same thread count: float reductions (and so
    # bit-identity) depend on it, and the pipeline fixture sets 1 thread in this process
    env = {**os.environ, FAULT_ENV: fault or "", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "train.cli", "run", "stage1", "--store", store, "--out",
           str(out), *ARGS]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for p in sa:
        for name in sa[p]:
            assert torch.equal(sa[p][name], sb[p][name]), (p, name)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])


def test_kill_and_resume_is_bit_identical(train_store: str, tmp_path: Path) -> None:  # noqa: F811
    straight = tmp_path / "straight"
    r = _run(train_store, straight)
    assert r.returncode == 0, r.stderr[-2000:]

    killed = tmp_path / "killed"
    r = _run(train_store, killed, "kill_in_save:4")
    assert r.returncode == -9, r.stderr[-2000:]
    names = [p.name for p in step_files(killed)]
    assert names[-1] == "step_00000003.pt"  # step 4's file never appeared under its name
    assert list((killed / "checkpoints").glob(".step_00000004.pt.*.tmp"))  # the torn temp

    r = _run(train_store, killed, "kill_after_save:5")
    assert r.returncode == -9, r.stderr[-2000:]
    assert r.stdout.splitlines()[0].startswith(f"resuming {killed}")
    assert not list((killed / "checkpoints").glob(".step_00000004.pt.*.tmp"))
    assert load_state(killed / "checkpoints" / "last.pt")["epoch_step"] == 2  # mid-epoch

    r = _run(train_store, killed)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0].startswith(f"resuming {killed}")
    for name in ("last.pt", "step_00000005.pt", "step_00000006.pt"):
        _assert_same_state(load_state(straight / "checkpoints" / name),
                           load_state(killed / "checkpoints" / name))
