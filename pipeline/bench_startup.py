"""``pipeline bench --startup``: what a small job pays beyond its own work, in one run.

Each figure is a fresh interpreter, as a user runs the command: the 7 bundled sample
clips (pipeline/sample_media/demo_manifest.csv) built into a new store with
``pipeline build`` (default ``--engine auto``), then ``pipeline info`` of that store.

- build: wall time of the whole command against its own work, which is the shard tasks'
  ``wall_s`` (what ``process_shard`` reports) summed over the shards, divided by the
  workers. Target: wall / work <= 2. Also what the task processes' forkserver imports
  before the first task can start (``pipeline.task_preload``; no torch: store.fbank is
  NumPy) and the wall time beyond own work.
- info: wall time of ``pipeline info`` against a bare interpreter (``python -c pass``) and
  against ``import torch`` (what it would cost if it imported torch). Target: <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent / "sample_media"


def timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time until the command's process exits, as a shell's ``time`` sees it (output
    goes to files: waiting for a pipe to close would also wait for a build's forkserver,
    which leaves ~20 ms after its driver, once it sees the driver gone)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        code = subprocess.Popen(cmd, stdout=out, stderr=err).wait()
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        proc = subprocess.CompletedProcess(cmd, code, out.read(), err.read())
    if proc.returncode not in (0, 1):  # info exits 1 when it lists problems
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}")
    return wall, proc


def bench_startup(workers: int, engine: str = "auto", limit: int | None = None
                  ) -> dict[str, Any]:
    py = sys.executable
    res: dict[str, Any] = {"workers": workers, "engine_asked": engine}
    res["python_s"] = timed([py, "-c", "pass"])[0]
    res["import_torch_s"] = timed([py, "-c", "import torch"])[0]
    res["task_preload_s"] = timed([py, "-c", "import pipeline.task_preload"])[0]
    with tempfile.TemporaryDirectory(prefix="mavil-bench-startup-") as tmp:
        out, reports = os.path.join(tmp, "store"), os.path.join(tmp, "reports")
        cmd = [py, "-m", "pipeline.cli", "build", "--manifest",
               str(SAMPLES / "demo_manifest.csv"), "--media-root", str(SAMPLES), "--out", out,
               "--engine", engine, "--workers", str(workers), "--no-progress",
               "--report-dir", reports]
        if limit:
            cmd += ["--limit", str(limit)]
        res["build_wall_s"], proc = timed(cmd)
        report = json.loads(next(Path(reports).glob("run-*.json")).read_text())
        res.update(engine=report["engine"], clips=report["clips_processed"],
                   shards=report["shards_run"], shard_size=report["shard_size"],
                   build_elapsed_s=report["elapsed_s"], work_s=report["work_s"],
                   peak_shards_at_once=report["peak_shards_at_once"])
        res["work_per_worker_s"] = report["work_s"] / workers
        res["build_ratio"] = res["build_wall_s"] / max(res["work_per_worker_s"], 1e-9)
        res["build_overhead_s"] = res["build_wall_s"] - res["work_per_worker_s"]
        res["info_wall_s"], proc = timed([py, "-m", "pipeline.cli", "info", out])
        probe = ("import runpy, sys; sys.argv = ['pipeline', 'info', sys.argv[1]]\n"
                 "try:\n    runpy.run_module('pipeline.cli', run_name='__main__')\n"
                 "except SystemExit:\n    pass\n"
                 "print('torch' in sys.modules, file=sys.stderr)")
        res["info_imports_torch"] = timed([py, "-c", probe, out])[1].stderr.strip() \
            .endswith("True")
    return res


def format_startup(r: dict[str, Any]) -> str:
    return "\n".join([
        f"machine      {os.cpu_count()} CPUs; python start {r['python_s']:.2f} s, "
        f"import torch {r['import_torch_s']:.2f} s",
        f"build        {r['clips']} clips in {r['shards']} shards of {r['shard_size']}, "
        f"engine {r['engine']} (asked {r['engine_asked']}) x{r['workers']}, at most "
        f"{r['peak_shards_at_once']} at once",
        f"  wall       {r['build_wall_s']:.2f} s (inside build() {r['build_elapsed_s']:.2f} s)",
        f"  own work   {r['work_per_worker_s']:.2f} s ({r['work_s']:.2f} s of shard tasks "
        f"/ {r['workers']} workers; wall / all the tasks' time "
        f"{r['build_wall_s'] / max(r['work_s'], 1e-9):.2f}x)",
        f"  ratio      wall / own work = {r['build_ratio']:.2f}x (target <= 2); beyond own "
        f"work {r['build_overhead_s']:.2f} s, of which the task processes' imports "
        f"(before the first task) {r['task_preload_s']:.2f} s",
        f"info         {r['info_wall_s']:.2f} s wall (target <= 2 s) = "
        f"{r['info_wall_s'] / r['python_s']:.1f}x a bare interpreter; imports torch: "
        f"{'yes' if r['info_imports_torch'] else 'no'}",
    ])


def run_bench_startup(args: argparse.Namespace) -> int:
    res = bench_startup(max(1, args.workers), args.startup_engine, args.limit)
    print(format_startup(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0
