"""Worker deaths stay with their clip, and workers die with their driver (issue 8, items
6 and 8), on real engines.

- A clip whose decoder SIGKILLs its worker (an ``--ffmpeg`` wrapper that kills its parent
  when it sees the clip) charged every shard running beside it on the local engine, and
  failed all of its shard-mates. Now only its own shard is retried, then isolated clip by
  clip: the poisoned clip alone is ``error`` with a reason naming the crash, and every
  other index row equals an in-process run's.
- SIGKILL of a local-engine driver left its forkserver and workers blocked forever; they
  now exit on their own (found by a unique environment tag in /proc).

No timing assumptions: kills are triggered by the work itself; waits have generous caps.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pipeline_fixtures import COMPARE, REPO, SAMPLES, index_rows

from pipeline.decode import DecodeOptions
from pipeline.ffmpeg_bin import ffmpeg_exe
from pipeline.generic_manifest import generic_vocabulary, read_generic
from pipeline.manifest import ManifestBuilder, shard_plan
from pipeline.run import BuildOptions, build
from pipeline.shard_task import DELAY_ENV, ShardJob, process_shard
from pipeline.sources import SourceConfig
from store import StoreSpec, create_store

CLIPS = [("bunny_0", "bigbuckbunny.mp4", 0, 2), ("poison", "poison.mp4", 0, 2),
         ("earth_0", "earth.mp4", 0, 2), ("city", "cityCC0_cut.mpg", 0, 2)]


def _material(tmp: Path) -> tuple[Path, Path]:
    media = tmp / "media"
    media.mkdir()
    for _, name, _, _ in CLIPS:
        src = SAMPLES / ("earth.mp4" if name == "poison.mp4" else name)
        shutil.copy(src, media / name)
    manifest = tmp / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end", "labels"])
        w.writerows([(c, str(media / n), s, e, "a") for c, n, s, e in CLIPS])
    wrapper = tmp / "ffmpeg-killer"
    wrapper.write_text("#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in *poison*) "
                       "kill -9 $PPID; sleep 5; exit 1;; esac; done\n"
                       f"exec {ffmpeg_exe()} \"$@\"\n")
    wrapper.chmod(0o755)
    return manifest, wrapper


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_clip_that_kills_its_worker_fails_alone(tmp_path: Path, engine: str) -> None:
    if engine == "ray":
        pytest.importorskip("ray")
    manifest, wrapper = _material(tmp_path)
    vocab = generic_vocabulary(manifest)
    b = read_generic(manifest, vocab, ManifestBuilder())
    out = tmp_path / "store"
    # Ray restarts a dead worker slowly on a busy box: one death per pass there
    retries = 1 if engine == "local" else 0
    opts = BuildOptions(out=str(out), engine=engine, workers=2, shard_size=2,
                        max_retries=retries,
                        progress=False, source=SourceConfig(),
                        decode=DecodeOptions(ffmpeg=str(wrapper)))
    report = build(b.specs, b.rejects, vocab, opts)
    assert report["shard_task_failures"] == []
    assert report["status_counts_store"] == {"error": 1, "ok": 3}
    rows = {r["clip_id"]: r for r in index_rows(str(out))}
    reason = rows["poison"]["error"]
    assert rows["poison"]["status"] == "error"
    assert reason.startswith("worker crashed while processing this clip (")
    if engine == "local":
        assert reason == ("worker crashed while processing this clip (WorkerDied: worker "
                          "died 1 times (last: killed by SIGKILL))")
    # everything else equals an uninterrupted in-process run with the real ffmpeg
    ref = tmp_path / "ref"
    create_store(str(ref), StoreSpec(shard_size=2), vocab)
    for sid, clips in enumerate(shard_plan(b.specs, 2)):
        process_shard(ShardJob(str(ref), sid, clips, poisoned={"poison": reason}))
    assert index_rows(str(out)) == index_rows(str(ref))
    assert set(COMPARE) <= set(rows["bunny_0"])


def _tagged(tag: bytes) -> list[int]:
    """Pids of live processes whose environment holds ``tag``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tag in env.split(b"\0") and state != "Z":
            pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_workers_exit_when_the_driver_is_killed(tmp_path: Path) -> None:
    manifest, _ = _material(tmp_path)
    out = tmp_path / "store"
    tag = f"MAVIL_TEST_TAG={uuid.uuid4().hex}"
    # the workers hold 60 s after each commit: the driver is killed while they wait
    env = {**os.environ, DELAY_ENV: "60", tag.split("=")[0]: tag.split("=")[1]}
    cmd = [sys.executable, "-m", "pipeline.cli", "build", "--manifest", str(manifest),
           "--out", str(out), "--engine", "local", "--workers", "2", "--shard-size", "2",
           "--no-progress"]
    log = tmp_path / "driver.log"
    with open(log, "wb") as err:
        driver = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 300
        while not list((out / "index").glob("[0-9]*.parquet")):
            assert driver.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "no shard committed within 300 s"
            time.sleep(0.05)
        assert len(_tagged(tag.encode())) >= 3  # driver, forkserver, task processes
        driver.send_signal(signal.SIGKILL)  # the driver only, not its process group
        driver.wait()
        killed = time.monotonic()
        while (left := _tagged(tag.encode())) and time.monotonic() < killed + 30:
            time.sleep(0.1)
        assert left == [], f"processes outlived their driver: {left}"
        print(f"all exited {time.monotonic() - killed:.2f} s after the driver's SIGKILL")
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
