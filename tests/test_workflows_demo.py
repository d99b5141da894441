"""The demo workflow end to end (the real commands: make-synthetic, build, stats, train run
stage1 / stage2 / finetune, evaluate run, evaluate compare), smaller than `make demo`; then
the runner SIGKILLed during a training step and re-run: completed steps are skipped, the
killed step resumes from its checkpoint, and the final outputs equal the uninterrupted
run's (the fine-tuned weights tensor for tensor, the metrics number for number)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "workflows" / "demo.yaml"
# small enough for a test on 2 cores; the same for both runs (equality needs it)
SETS = ["synthetic_clips=45", "engine=local", "workers=2",
        "stage1_args=[optim.epochs=2,train.ckpt_every=2]", "stage2_args=[optim.epochs=1]",
        "finetune_args=[optim.epochs=2]"]
PREP = ("synthetic", "manifest.csv", "store", "_workflow")  # what steps 1-4 made


def _cmd(workdir: Path, until: str | None = None) -> list[str]:
    sets = [a for s in [f"workdir={workdir}", *SETS] for a in ("--set", s)]
    return [sys.executable, "-m", "workflows", "run", str(DEMO), *sets,
            *(["--until", until] if until else [])]


def _run(workdir: Path, timeout: float = 1500, until: str | None = None
         ) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(workdir, until), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted demo run up to the fine-tuned model (the training the kill test
    compares against); the end-to-end test runs the rest."""
    workdir = tmp_path_factory.mktemp("demo-ref") / "demo"
    proc = _run(workdir, until="finetune")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    return workdir


def _descendants(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def _gone(pids: list[int]) -> bool:
    import psutil

    return not [p for p in pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_sigkill_during_training_then_rerun_equals_uninterrupted(reference: Path,
                                                                 tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    workdir.mkdir()
    for name in PREP:  # steps 1-4 as the reference left them (same store: same bytes)
        src = reference / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, workdir / name)

    runner = subprocess.Popen(_cmd(workdir, "finetune"), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    last = workdir / "runs" / "stage1" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 900
    while not last.exists():
        assert runner.poll() is None, runner.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "stage 1 never saved a checkpoint"
        time.sleep(0.2)
    children = _descendants(runner.pid)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 60
    while not _gone(children):
        assert time.monotonic() < deadline, "the training step outlived its runner"
        time.sleep(0.2)
    assert not (workdir / "runs" / "stage1" / "summary.json").exists()

    proc = _run(workdir, until="finetune")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    out = proc.stdout
    for i, name in enumerate(("synthetic", "manifest", "build", "stats"), 1):
        assert f"[{i}/9] {name}: done already, skipped" in out
    assert "[5/9] stage1: resuming:" in out
    log = (workdir / "_workflow" / "demo" / "logs" / "stage1.log").read_text()
    assert "resuming" in log.split("=== ")[-1].splitlines()[1]  # the trainer's first line

    def final_weights(root: Path) -> dict[str, torch.Tensor]:
        ckpt = torch.load(root / "runs" / "finetune_av" / "checkpoints" / "last.pt",
                          map_location="cpu", weights_only=True)
        return ckpt["model"]

    ref_w, got_w = final_weights(reference), final_weights(workdir)
    assert ref_w.keys() == got_w.keys()
    assert all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)
    for run in ("stage1", "stage2", "finetune_av"):  # every run finished the same way
        ref_s = json.loads((reference / "runs" / run / "summary.json").read_text())
        got_s = json.loads((workdir / "runs" / run / "summary.json").read_text())
        assert got_s["status"] == ref_s["status"] == "finished"


def test_demo_runs_end_to_end_then_finds_everything_done(reference: Path) -> None:
    proc = _run(reference)  # evaluate + report (the rest: done already)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "[7/9] finetune: done already, skipped" in proc.stdout
    state = json.loads((reference / "_workflow" / "demo" / "state.json").read_text())
    assert state["status"] == "finished"
    assert all(state["steps"][s]["status"] in ("done", "skipped") for s in state["order"])
    metrics = json.loads((reference / "eval" / "finetune_av" / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0
    report = reference / "report" / "report.md"
    assert report.stat().st_size > 0
    for run in ("stage1", "stage2", "finetune_av"):
        summary = json.loads((reference / "runs" / run / "summary.json").read_text())
        assert summary["status"] == "finished"

    t0 = time.monotonic()
    again = _run(reference, timeout=300)
    assert again.returncode == 0
    assert "all 9 steps were already done; nothing to run" in again.stdout
    assert f"result: {report}" in again.stdout
    assert time.monotonic() - t0 < 120  # nothing trained: checks only (generous: busy CI)
