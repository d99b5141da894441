"""Engines for real: a local Ray cluster (embedded: `--engine ray`) and a Dask LocalCluster
joined by address (2 workers each) with a worker SIGKILLed mid-shard; the local pool with
workers dying until a shard runs out of retries; the driver SIGKILLed after its first
commit and re-run; --retry-failed; and `stats` reduced on Dask. Each result must equal an
uninterrupted run (same clips, same features): the reference store, whose index rows,
checksums of the stored bytes included, every engine's store must equal, so Ray, Dask and
the local processes that ``--engine auto`` picks without a cluster write the same bytes.

Robustness on a loaded CI box: nothing here depends on how fast the box is. Kills are
triggered by the work itself (the crash hook fires half-way through a shard), and the
driver kill waits for the first committed index part while the driver is held after that
commit for far longer than a poll takes (``DELAY_ENV``), so the kill always lands between
the first and the last commit; every wait has a generous cap and fails with the cause.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_fixtures import (  # noqa: F401
    REPO,
    SHARD,
    PipelineSetup,
    index_rows,
    pipeline_setup,
    reference_store,
)

from pipeline.cli import main
from pipeline.run import BuildOptions, build
from pipeline.shard_task import CRASH_ENV, DELAY_ENV
from pipeline.sources import SourceConfig
from pipeline.stats import compute_stats
from store import open_store


def _opts(out: Path, engine: str, **kw) -> BuildOptions:
    kw.setdefault("progress", False)
    return BuildOptions(out=str(out), engine=engine, workers=2, shard_size=SHARD,
                        source=SourceConfig(), **kw)


def _numpy_stats(store_path: str) -> tuple[float, float, int]:
    """Independent reference for `stats`: mean/std of every ok train clip's stored fbank."""
    store = open_store(store_path)
    rows = [r for r in store.index().to_pylist()
            if r["status"] == "ok" and r["has_audio"] and r["split"] == "train"]
    fb = np.stack([store.get(r["clip_id"]).fbank.float().numpy() for r in rows])
    return float(fb.astype(np.float64).mean()), float(fb.astype(np.float64).std()), len(rows)


@pytest.mark.slow
def test_ray_survives_a_worker_killed_mid_shard(pipeline_setup: PipelineSetup,  # noqa: F811
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    s = pipeline_setup
    marker = s.tmp / "crashed-ray"
    monkeypatch.setenv(CRASH_ENV, str(marker))  # ray.init (inside build) passes it on
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    out = s.tmp / "store-ray"
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    report = build(s.builder.specs, s.builder.rejects, s.vocab, _opts(out, "ray"))
    assert report["engine"] == "ray"  # explicit ray without an address: an embedded one
    assert marker.exists()  # a worker really died mid-shard
    assert report["shard_task_failures"] == []
    assert report["status_counts_store"] == {"ok": 7, "not_found": 1}
    assert index_rows(str(out)) == s.ref


@pytest.mark.slow
def test_dask_by_address_survives_a_killed_worker_and_reduces_stats(
        pipeline_setup: PipelineSetup, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    pytest.importorskip("dask.distributed")
    import logging

    from dask.distributed import LocalCluster

    s = pipeline_setup
    marker = s.tmp / "crashed-dask"
    monkeypatch.setenv(CRASH_ENV, str(marker))  # before the worker processes start
    out = s.tmp / "store-dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        report = build(s.builder.specs, s.builder.rejects, s.vocab,
                       _opts(out, "dask", address=cluster.scheduler_address))
        assert marker.exists()  # a worker really died mid-shard (its nanny restarted it)
        assert report["shard_task_failures"] == []
        assert index_rows(str(out)) == s.ref
        stats = compute_stats(str(out), "train", "dask", 2, cluster.scheduler_address)
    mean, std, n = _numpy_stats(str(out))
    assert stats["n_clips"] == n == 6
    assert stats["fbank_mean"] == pytest.approx(mean, rel=1e-9)
    assert stats["fbank_std"] == pytest.approx(std, rel=1e-9)
    assert open_store(str(out)).spec.stats["fbank_mean"] == stats["fbank_mean"]


@pytest.mark.slow
def test_driver_killed_then_rerun_equals_uninterrupted(pipeline_setup: PipelineSetup,  # noqa: F811
                                                       capsys: pytest.CaptureFixture) -> None:
    s = pipeline_setup
    out = s.tmp / "store-killed"
    cmd = [sys.executable, "-m", "pipeline.cli", "build", "--manifest", str(s.manifest),
           "--out", str(out), "--engine", "local", "--workers", "1", "--shard-size",
           str(SHARD), "--no-progress"]
    # the worker holds 60 s after each commit: the poll below sees the first index part
    # long before a second commit could happen, however loaded the box is
    env = {**os.environ, DELAY_ENV: "60"}
    log = s.tmp / "killed-driver.log"
    with open(log, "wb") as err:  # a file, not a pipe: a full pipe would block the driver
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=err)
    parts = lambda: list((out / "index").glob("[0-9]*.parquet"))  # noqa: E731 (not .tmp-*)
    try:
        deadline = time.monotonic() + 300
        while not parts():
            if proc.poll() is not None:
                pytest.fail(f"build exited ({proc.returncode}) before its first commit: "
                            f"{log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no shard committed within 300 s")
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # driver, forkserver and worker
        proc.wait()
    committed = parts()
    assert len(committed) == 1, "the kill must land between the first and the next commit"
    assert main(cmd[3:]) == 0  # the same command again (in-process: imports are paid)
    assert f"({len(committed) * SHARD} already committed)" in capsys.readouterr().out
    assert index_rows(str(out)) == s.ref


@pytest.mark.slow
def test_retry_failed_reprocesses_only_failures(pipeline_setup: PipelineSetup,  # noqa: F811
                                                capsys: pytest.CaptureFixture) -> None:
    s = pipeline_setup
    out = s.tmp / "store-retry"
    first = build(s.builder.specs, s.builder.rejects, s.vocab,
                  _opts(out, "local", max_retries=0, progress=True))
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]  # tqdm's final state
    # count, elapsed<ETA, rate (tqdm writes s/clip when under 1 clip/s), failures by kind
    assert re.search(r" 8/8 \[[\d:]+<[\d:]+, +[\d.]+(clip/s|s/clip), not_found=1\]", bar), bar
    assert first["status_counts_this_run"] == {"not_found": 1, "ok": 7}
    before = {r["clip_id"]: r for r in index_rows(str(out))}
    assert before["gone"]["status"] == "not_found"
    shutil.copy(s.media / "earth.mp4", s.media / "missing.mp4")  # the file appears
    try:
        again = build(s.builder.specs, s.builder.rejects, s.vocab, _opts(out, "local"))
        assert again["clips_processed"] == 0  # plain re-run: resume skips committed shards
        report = build(s.builder.specs, s.builder.rejects, s.vocab,
                       _opts(out, "local", retry_failed=True))
        fixed = index_rows(reference_store(s.tmp / "fixed", s.manifest, s.vocab))
    finally:
        (s.media / "missing.mp4").unlink()
    assert report["shards_run"] == 1 and report["status_counts_store"] == {"ok": 8}
    after = index_rows(str(out))
    assert after == fixed
    kept = [r for r in after if r["clip_id"] != "gone"]
    assert kept == [r for r in s.ref if r["clip_id"] != "gone"]  # ok clips copied unchanged


@pytest.mark.slow
def test_local_pool_retries_dead_workers_then_commits_errors(
        pipeline_setup: PipelineSetup, tmp_path: Path) -> None:  # noqa: F811
    s = pipeline_setup
    out = tmp_path / "store-dying"
    marker = tmp_path / "dies"
    # 5 deaths, 1 retry, 1 worker (FIFO): shards 0,1,2,3 die once, shard 0 dies again and
    # runs out of retries (its clips become `error` rows); shards 1-3 succeed on retry.
    # The local pool's forkserver keeps the environment it started with, so the hook is
    # set in a fresh command (subprocess) rather than with monkeypatch.
    cmd = [sys.executable, "-m", "pipeline.cli", "build", "--manifest", str(s.manifest),
           "--out", str(out), "--engine", "local", "--workers", "1", "--shard-size",
           str(SHARD), "--max-retries", "1", "--no-progress"]
    done = subprocess.run(cmd, env={**os.environ, CRASH_ENV: f"{marker}:5"}, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert all(Path(f"{marker}.{i}").exists() for i in range(5))  # 5 workers really died
    assert "shard failures   1" in done.stdout
    rows = index_rows(str(out))
    assert len(rows) == len(s.ref)  # every clip accounted for
    dead = [r for r in rows if r["status"] == "error"]
    assert [r["shard"] for r in dead] == [0] * SHARD
    assert all("worker died 2 times" in r["error"] for r in dead)
    alive = [r for r in rows if r["status"] != "error"]
    assert alive == [r for r in s.ref if r["shard"] != 0]
