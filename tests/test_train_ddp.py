"""DDP: ``torchrun --nproc-per-node 2`` (gloo) equals one process at the same effective batch.

Fine-tuning with the stochastic parts of the model off (drop path, fine-tune masking,
mixup, SpecAugment): the data side is deterministic by construction (augmentation seeded by
(seed, epoch, clip); sampler draws dealt round-robin to ranks, so global batch b holds the
same clips for any world size), and the masking noise of pre-training comes from per-rank
generators, which is why pre-training is not compared this way. Tolerance: float32
reductions in another order (all-reduce of two half-batch gradients vs one batch).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.train_fixtures import train_store  # noqa: F401 - fixture
from train.cli import main
from train.resume import load_state

REPO = Path(__file__).resolve().parents[1]
DETERMINISTIC = ["data.mixup=0.0", "data.time_mask=0", "data.freq_mask=0",
                 "model.kwargs.drop_path=0.0", "model.kwargs.mask_t_prob=0.0",
                 "model.kwargs.mask_f_prob=0.0", "model.kwargs.video_mask_ratio=0.0",
                 "optim.epochs=1", "optim.batch_size=4"]


def _finetune(store: str, init: Path, out: Path, nproc: int, batch: int) -> None:
    args = ["run", "finetune", "--store", store, "--out", str(out), "--init", str(init),
            "--mode", "av", "--recipe", "tiny", f"data.batch_size={batch}", *DETERMINISTIC]
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc-per-node={nproc}"] if nproc > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*launcher, "-m", "train.cli", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def init_ckpt(train_store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("ddp") / "stage1"
    assert main(["run", "stage1", "--store", train_store, "--out", str(out), "--recipe", "tiny",
                 "train.max_steps=1"]) == 0
    return out


def test_torchrun_two_processes_equal_one(train_store: str, init_ckpt: Path,  # noqa: F811
                                          tmp_path: Path) -> None:
    _finetune(train_store, init_ckpt, tmp_path / "one", 1, 4)
    _finetune(train_store, init_ckpt, tmp_path / "two", 2, 2)       # 2 x 2, no accumulation
    _finetune(train_store, init_ckpt, tmp_path / "two_acc", 2, 1)   # 2 x 1 x 2 micro-steps
    ref = load_state(tmp_path / "one" / "checkpoints" / "last.pt")
    assert ref["step"] == 3 and ref["world_size"] == 1
    for name, accum in (("two", 1), ("two_acc", 2)):
        other = load_state(tmp_path / name / "checkpoints" / "last.pt")
        assert other["world_size"] == 2 and other["config"]["meta"]["accum_steps"] == accum
        assert other["step"] == ref["step"]
        assert len(other["loader"]) == 2 and len(other["rng"]) == 2  # per-rank state
        moved = 0
        for k, v in ref["model"].items():
            torch.testing.assert_close(other["model"][k], v, rtol=1e-4, atol=1e-6, msg=k)
            init = load_state(init_ckpt / "checkpoints" / "last.pt")["model"].get(k)
            moved += int(init is None or not torch.equal(init, v))
        assert moved > len(ref["model"]) // 2  # the weights did train
