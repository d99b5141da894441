"""Engines for real: a local Ray cluster and a Dask LocalCluster (2 workers) with a worker
SIGKILLed mid-shard; the driver SIGKILLed after its first commit and re-run; and
--retry-failed. Each result must equal an uninterrupted run (same clips, same features)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.cli import main
from pipeline.generic_manifest import generic_vocabulary, read_generic
from pipeline.manifest import ManifestBuilder, shard_plan
from pipeline.run import BuildOptions, build
from pipeline.shard_task import CRASH_ENV, DELAY_ENV, ShardJob, process_shard
from pipeline.sources import SourceConfig
from store import StoreSpec, create_store, open_store

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "pipeline" / "sample_media"
SHARD = 2
COMPARE = ["clip_id", "source_id", "start", "end", "uri", "split", "labels", "status",
           "error", "shard", "row", "audio_frames", "video_frames", "height", "width",
           "has_audio", "has_video", "duration", "checksum"]


def write_manifest(path: Path, media: Path) -> Path:
    rows = [("bunny_0", "bigbuckbunny.mp4", 0, 2), ("bunny_2", "bigbuckbunny.mp4", 2, 4),
            ("earth_0", "earth.mp4", 0, 2), ("earth_10", "earth.mp4", 10, 12),
            ("city", "cityCC0_cut.mpg", 0, 2), ("speech", "speech_two_speakers.wav", 3, 5),
            ("house", "house_lo.ogg", 0, 2), ("gone", "missing.mp4", 0, 2)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end", "labels", "split"])
        for cid, name, s, e in rows:
            w.writerow([cid, str(media / name), s, e, "a;b" if s else "a", "train"])
    return path


def load(manifest: Path):
    vocab = generic_vocabulary(manifest)
    return read_generic(manifest, vocab, ManifestBuilder()), vocab


def index_rows(store: str) -> list[dict]:
    table = open_store(store).index().select(COMPARE)
    return sorted(table.to_pylist(), key=lambda r: r["clip_id"])


def reference(tmp: Path, manifest: Path, vocab: pa.Table) -> list[dict]:
    """An uninterrupted run: every planned shard processed once, in order, in-process."""
    root = str(tmp / "reference")
    create_store(root, StoreSpec(shard_size=SHARD), vocab)
    specs = read_generic(manifest, vocab, ManifestBuilder()).specs
    for sid, clips in enumerate(shard_plan(specs, SHARD)):
        process_shard(ShardJob(root, sid, clips))
    return index_rows(root)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("engines")
    media = tmp / "media"
    shutil.copytree(SAMPLES, media)
    manifest = write_manifest(tmp / "manifest.csv", media)
    builder, vocab = load(manifest)
    return tmp, media, manifest, builder, vocab, reference(tmp, manifest, vocab)


def _opts(out: Path, engine: str, **kw) -> BuildOptions:
    return BuildOptions(out=str(out), engine=engine, workers=2, shard_size=SHARD,
                        progress=False, source=SourceConfig(), **kw)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ray", "dask"])
def test_engine_survives_a_worker_killed_mid_shard(setup, engine: str, monkeypatch) -> None:
    pytest.importorskip(engine)
    tmp, _, _, builder, vocab, ref = setup
    marker = tmp / f"crashed-{engine}"
    monkeypatch.setenv(CRASH_ENV, str(marker))
    if engine == "ray":
        monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    out = tmp / f"store-{engine}"
    report = build(builder.specs, builder.rejects, vocab, _opts(out, engine))
    assert marker.exists()  # a worker really died mid-shard
    assert report["shard_task_failures"] == []
    assert report["status_counts_store"] == {"ok": 7, "not_found": 1}
    assert index_rows(str(out)) == ref


@pytest.mark.slow
def test_driver_killed_then_rerun_equals_uninterrupted(setup, capsys) -> None:
    tmp, _, manifest, _, _, ref = setup
    out = tmp / "store-killed"
    cmd = [sys.executable, "-m", "pipeline.cli", "build", "--manifest", str(manifest),
           "--out", str(out), "--engine", "local", "--workers", "1", "--shard-size",
           str(SHARD), "--no-progress"]
    env = {**os.environ, DELAY_ENV: "1.5"}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    parts = lambda: list((out / "index").glob("[0-9]*.parquet"))  # noqa: E731 (not .tmp-*)
    while time.time() < deadline and not parts():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = parts()
    assert 1 <= len(committed) < 4, "the kill must land between the first and last commit"
    assert main(cmd[3:]) == 0  # the same command again (in-process: imports are paid)
    assert f"({len(committed) * SHARD} already committed)" in capsys.readouterr().out
    assert index_rows(str(out)) == ref


@pytest.mark.slow
def test_retry_failed_reprocesses_only_failures(setup) -> None:
    tmp, media, manifest, builder, vocab, ref = setup
    out = tmp / "store-retry"
    build(builder.specs, builder.rejects, vocab, _opts(out, "local", max_retries=0))
    before = {r["clip_id"]: r for r in index_rows(str(out))}
    assert before["gone"]["status"] == "not_found"
    shutil.copy(media / "earth.mp4", media / "missing.mp4")  # the file appears
    try:
        again = build(builder.specs, builder.rejects, vocab, _opts(out, "local"))
        assert again["clips_processed"] == 0  # plain re-run: resume skips committed shards
        report = build(builder.specs, builder.rejects, vocab,
                       _opts(out, "local", retry_failed=True))
        fixed = reference(tmp / "fixed", manifest, vocab)
    finally:
        (media / "missing.mp4").unlink()
    assert report["shards_run"] == 1 and report["status_counts_store"] == {"ok": 8}
    after = index_rows(str(out))
    assert after == fixed
    kept = [r for r in after if r["clip_id"] != "gone"]
    assert kept == [r for r in ref if r["clip_id"] != "gone"]  # ok clips copied unchanged


@pytest.mark.slow
def test_shard_whose_worker_keeps_dying_is_committed_as_errors(setup, tmp_path: Path) -> None:
    tmp, _, _, builder, vocab, ref = setup
    out = tmp / "store-dying"
    marker = tmp_path / "dies"
    # the local pool's forkserver keeps the environment it started with, so the hook is
    # set in a fresh command (subprocess) rather than with monkeypatch
    code = ("import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))")
    manifest = tmp / "manifest.csv"
    cmd = [sys.executable, "-c", code, "build", "--manifest", str(manifest), "--out",
           str(out), "--engine", "local", "--workers", "1", "--shard-size", str(SHARD),
           "--max-retries", "0", "--no-progress"]
    done = subprocess.run(cmd, env={**os.environ, CRASH_ENV: str(marker)}, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = index_rows(str(out))
    assert len(rows) == len(ref)  # every clip accounted for
    dead = [r for r in rows if r["status"] == "error"]
    assert len(dead) == SHARD and all("worker died 1 times" in r["error"] for r in dead)
    alive = {r["clip_id"]: r for r in rows if r["status"] != "error"}
    assert [r for r in ref if r["clip_id"] in alive] == list(alive.values())
