"""Build a store from a manifest: plan shards, resume, run the engine, report.

Shard assignment is deterministic (manifest order, consecutive chunks of ``shard_size``,
chosen once when the store is created -- ``choose_shard_size``: small manifests get small
shards, so that every worker has work -- and recorded in store.json), so re-running the
same command, with any ``workers``, skips the committed shards (resume), and
``retry_failed`` re-processes only failed clips of committed shards. The store records
which clips each shard id stands for (its manifest claim): a build of another manifest
into the same store is refused before it starts, and at each commit. Every clip the
manifest accepted ends in the index; rows it rejected are in the rejects report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from pipeline.decode import DecodeOptions
from pipeline.engines import choose_engine
from pipeline.isolation import run_shards
from pipeline.manifest import ClipSpec, Reject, reject_counts, shard_plan, write_rejects
from pipeline.shard_task import ShardJob, failure_shard
from pipeline.sources import SourceConfig
from store import (
    StoreConflict,
    StoreError,
    StoreSpec,
    StoreWriter,
    create_store,
    open_store,
    open_writer,
    shard_fingerprint,
)
from store.backends.fs import join, resolve
from store.claim import MANIFEST_JSON, claim_store
from store.writer import read_spec

DEFAULT_SHARD_SIZE = 1000  # clips per shard of a large manifest
SHARDS_PER_WORKER = 4      # what a small manifest is cut into, at least, per worker


@dataclass
class BuildOptions:
    out: str
    engine: str = "auto"                 # pipeline/engines.py choose_engine
    workers: int = 2
    address: str | None = None
    backend: str = "zarr"
    shard_size: int | None = None        # None: the store's, or choose_shard_size's
    jpeg_quality: int | None = None      # None: StoreSpec default
    store_waveform: bool = False
    retry_failed: bool = False
    max_retries: int = 3
    report_dir: str | None = None        # default: <out>/reports for a local store
    progress: bool = True
    jpeg_encoder: str = "pil"
    target_frames: int | None = None     # fbank frames per clip; None: 1024 (10-s clips)
    clip_seconds: float | None = None    # nominal clip length; None: 10 s
    source: SourceConfig = field(default_factory=SourceConfig)
    decode: DecodeOptions = field(default_factory=DecodeOptions)


def open_or_create(opts: BuildOptions, vocabulary: pa.Table, vocab_name: str) -> StoreWriter:
    """A writer for ``opts.out``: the existing store (resume) or a new one."""
    fs, root = resolve(opts.out)
    if fs.exists(f"{root}/store.json"):
        writer = open_writer(opts.out)
        want = opts.shard_size or writer.spec.shard_size
        frames = opts.target_frames or writer.spec.target_frames
        if (want != writer.spec.shard_size or opts.backend != writer.spec.backend
                or frames != writer.spec.target_frames):
            raise StoreError(f"{opts.out} was built with shard_size={writer.spec.shard_size}, "
                             f"format={writer.spec.backend}, target_frames="
                             f"{writer.spec.target_frames}; resume with the same settings")
        return writer
    spec = StoreSpec(backend=opts.backend, shard_size=opts.shard_size or DEFAULT_SHARD_SIZE,
                     store_waveform=opts.store_waveform,
                     vocabulary={"name": vocab_name, "num_classes": vocabulary.num_rows})
    if opts.target_frames:  # the clip length as stored (store.json fbank.target_frames)
        spec.fbank["target_frames"] = int(opts.target_frames)
    if opts.clip_seconds:
        spec.clip_seconds = float(opts.clip_seconds)
    if opts.jpeg_quality:
        spec.jpeg_quality = opts.jpeg_quality
    return create_store(opts.out, spec, vocabulary)


def choose_shard_size(clips: int, workers: int) -> int:
    """Clips per shard for a new store: the default 1000, or fewer when that would leave
    workers idle -- at least SHARDS_PER_WORKER shards per worker (15 clips on 2 workers:
    shards of 2 clips, 8 shards), never under 1 clip."""
    return max(1, min(DEFAULT_SHARD_SIZE, -(-clips // (SHARDS_PER_WORKER * max(1, workers)))))


def recorded_shard_size(path: str) -> int | None:
    """The shard size the store already plans with: store.json's, else that of the claim
    (manifest.json) of a build that stopped before creating store.json; None for a new
    store."""
    fs, root = resolve(path)
    if fs.exists(join(root, "store.json")):
        return read_spec(fs, root).shard_size
    try:
        size = json.loads(fs.cat_file(join(root, MANIFEST_JSON))).get("shard_size")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def shard_size_for(opts: BuildOptions, clips: int) -> int:
    """The shard plan's size: the store's (a different --shard-size is an error), else
    ``opts.shard_size``, else ``choose_shard_size``."""
    recorded = recorded_shard_size(opts.out)
    if recorded is None:
        return opts.shard_size or choose_shard_size(clips, opts.workers)
    if opts.shard_size and opts.shard_size != recorded:
        raise StoreError(f"{opts.out} plans shards of {recorded} clips (store.json "
                         f"shard_size); --shard-size {opts.shard_size} would plan other "
                         "shards: drop --shard-size to resume, or use a new --out")
    return recorded


def plan_jobs(writer: StoreWriter, specs: list[ClipSpec], opts: BuildOptions
              ) -> tuple[list[ShardJob], int]:
    """Jobs still to run, and how many clips are already committed (skipped)."""
    committed = writer.committed_shards()
    jobs, skipped = [], 0
    plan = shard_plan(specs, writer.spec.shard_size)
    # refuse up front if another manifest claims this store (FORMAT.md "Concurrent builds")
    claims = shard_claims(specs, writer.spec.shard_size)
    writer.claim_manifest(claims, _describe(specs))
    for shard_id, clips in enumerate(plan):
        job = ShardJob(opts.out, shard_id, clips, opts.source, opts.decode, opts.jpeg_encoder,
                       claim=claims[shard_id])
        if shard_id in committed:
            index = writer.shard_index(shard_id)
            if index["clip_id"].to_pylist() != [c.clip_id for c in clips]:
                raise StoreError(f"shard {shard_id} of {opts.out} holds other clips than this "
                                 "manifest assigns to it; use a new --out or the same manifest")
            failed = sum(s != "ok" for s in index["status"].to_pylist())
            if not (opts.retry_failed and failed):
                skipped += len(clips)
                continue
            job.retry_failed = True
        jobs.append(job)
    return jobs, skipped


def shard_claims(specs: list[ClipSpec], shard_size: int) -> list[str]:
    """The store's manifest claim for this manifest: one fingerprint per planned shard."""
    return [shard_fingerprint([c.clip_id for c in clips])
            for clips in shard_plan(specs, shard_size)]


def _describe(specs: list[ClipSpec]) -> str:
    return f"{len(specs)} clips, first {specs[0].clip_id!r}" if specs else "no clips"


def build(specs: list[ClipSpec], rejects: list[Reject], vocabulary: pa.Table,
          opts: BuildOptions, vocab_name: str = "custom") -> dict[str, Any]:
    """Run the whole build; returns (and writes) the run report."""
    t0 = time.time()
    engine, why = choose_engine(opts.engine, opts.address)
    opts = dataclasses.replace(opts, engine=engine, shard_size=shard_size_for(opts, len(specs)))
    fs, root = resolve(opts.out)
    if not fs.exists(f"{root}/store.json"):  # claim first: a refused build writes nothing
        claim_store(opts.out, shard_claims(specs, opts.shard_size), opts.shard_size,
                    _describe(specs))
    writer = open_or_create(opts, vocabulary, vocab_name)
    jobs, skipped = plan_jobs(writer, specs, opts)
    if jobs:  # said once the build is accepted (a refused one prints only its error)
        print(f"engine           {engine}: {why}", file=sys.stderr)
    statuses: Counter = Counter()
    nbytes, done_clips, shard_errors = 0, 0, []
    spans: list[tuple[float, float]] = []  # (start, end) of each shard task's own work
    bar = tqdm(total=len(specs), initial=skipped, unit="clip", disable=not opts.progress,
               dynamic_ncols=True, desc="clips")
    for job, result in run_shards(opts.engine, jobs, opts.workers, opts.max_retries,
                                  opts.address):
        if isinstance(result, StoreConflict) or "StoreConflict" in type(result).__name__:
            bar.close()
            raise StoreConflict(f"build stopped: {result}")
        if isinstance(result, BaseException):
            reason = f"shard task failed after retries: {type(result).__name__}: {result}"
            shard_errors.append({"shard": job.shard_id, "error": reason[:500]})
            if job.retry_failed:  # keep the committed shard as it is
                index = writer.shard_index(job.shard_id)
                result = {"statuses": Counter(index["status"].to_pylist()), "bytes": 0}
            else:
                result = failure_shard(job, reason[:500])
        if result.get("wall_s"):  # a task that ran (not a committed failure)
            end = time.time()
            spans.append((end - float(result["wall_s"]), end))
        statuses.update(result["statuses"])
        nbytes += result["bytes"]
        done_clips += len(job.clips)
        bar.update(len(job.clips))
        fails = {k: v for k, v in statuses.items() if k != "ok"}
        bar.set_postfix_str(" ".join(f"{k}={v}" for k, v in sorted(fails.items())) or "ok")
    bar.close()
    elapsed = time.time() - t0
    report = {
        "out": opts.out, "engine": opts.engine, "workers": opts.workers,
        "manifest_clips": len(specs), "rejected_rows": len(rejects),
        "rejects_by_reason": reject_counts(rejects),
        "shard_size": writer.spec.shard_size,
        "shards_total": -(-len(specs) // writer.spec.shard_size) if specs else 0,
        "shards_run": len(jobs), "clips_skipped_committed": skipped,
        "clips_processed": done_clips, "status_counts_this_run": dict(sorted(statuses.items())),
        "shard_task_failures": shard_errors, "bytes_written": nbytes,
        "elapsed_s": round(elapsed, 3),
        # the shard tasks' own wall time (process_shard's wall_s), summed, and the most
        # that ran at once (from each task's span, as the driver saw it end)
        "work_s": round(sum(e - s for s, e in spans), 3),
        "peak_shards_at_once": peak_overlap(spans),
        "clips_per_s": round(done_clips / elapsed, 3) if elapsed > 0 else 0.0,
        "retry_failed": opts.retry_failed,
    }
    report["status_counts_store"] = store_status_counts(opts.out)
    write_report(report, rejects, opts)
    return report


def peak_overlap(spans: list[tuple[float, float]]) -> int:
    """The most intervals ``(start, end)`` that overlap at one instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans],
                    key=lambda ev: (ev[0], ev[1]))
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def store_status_counts(path: str) -> dict[str, int]:
    index = open_store(path).index()
    return dict(sorted(Counter(index["status"].to_pylist()).items()))


def write_report(report: dict[str, Any], rejects: list[Reject], opts: BuildOptions) -> None:
    folder = opts.report_dir
    if folder is None and "://" not in opts.out:
        folder = os.path.join(opts.out, "reports")
    if folder is None:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    Path(folder).mkdir(parents=True, exist_ok=True)
    rej = Path(folder) / f"rejects-{stamp}.csv"
    write_rejects(rejects, rej)
    report["rejects_report"] = str(rej)
    path = Path(folder) / f"run-{stamp}.json"
    report["report"] = str(path)
    path.write_text(json.dumps(report, indent=1))


def format_summary(report: dict[str, Any]) -> str:
    lines = [
        f"store            {report['out']}",
        f"manifest         {report['manifest_clips']} clips, {report['rejected_rows']} rows "
        f"rejected" + (f" {report['rejects_by_reason']}" if report["rejects_by_reason"] else ""),
        f"this run         {report['clips_processed']} clips in {report['shards_run']} shards "
        f"of {report['shard_size']} on {report['engine']} x{report['workers']} "
        f"({report['clips_skipped_committed']} already committed) in "
        f"{report['elapsed_s']:.1f} s, {report['clips_per_s']} clips/s, "
        f"{report['bytes_written'] / 1e6:.1f} MB written; shard work {report['work_s']:.1f} s, "
        f"at most {report['peak_shards_at_once']} shards at once",
        f"statuses (run)   {report['status_counts_this_run']}",
        f"statuses (store) {report['status_counts_store']}",
    ]
    if report["shard_task_failures"]:
        lines.append(f"shard failures   {len(report['shard_task_failures'])}")
    if report.get("report"):
        lines.append(f"report           {report['report']}")
        lines.append(f"rejects          {report['rejects_report']}")
    return "\n".join(lines)
