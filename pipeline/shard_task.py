"""The unit of work: fetch, decode and featurize every clip of one shard, then commit it.

``process_shard`` runs on an engine worker (Ray task, Dask task, or a local process). It
never raises for a bad clip: each clip becomes one ClipRecord, ok or failed with a reason.
With ``retry_failed`` it re-processes only the failed clips of a committed shard and copies
the ok clips' stored features -- each checked against its stored checksum first; a damaged
one is re-processed like a failed clip -- then rewrites the shard whole (the store commits
atomically). Downloads run ``SourceConfig.downloads_in_flight`` clips ahead of the decode
(pipeline/prefetch.py); the records keep the shard's clip order.
"""

from __future__ import annotations

import os
import resource
import signal
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from pipeline.decode import DecodeOptions, decode_clip
from pipeline.features import failed_record, record_from_decoded
from pipeline.manifest import WINDOW_TOLERANCE_S, ClipSpec
from pipeline.prefetch import fetch_result, prefetched
from pipeline.probe import MediaError
from pipeline.sources import Fetched, FetchError, SourceConfig
from pipeline.workspace import sweep
from store import ClipRecord, StoreError, StoreSpec, open_store, open_writer

# Test hook: "<marker path>[:N]" -> a task that finds a missing marker creates it and
# SIGKILLs its own process half-way through its shard (a worker dying mid-shard).
CRASH_ENV = "MAVIL_PIPELINE_CRASH_ONCE"
# Test hook: seconds to sleep after each shard commit (lets a test kill the driver
# between commits deterministically).
DELAY_ENV = "MAVIL_PIPELINE_SHARD_DELAY"


@dataclass
class ShardJob:
    store: str
    shard_id: int
    clips: list[ClipSpec]
    source: SourceConfig = field(default_factory=SourceConfig)
    decode: DecodeOptions = field(default_factory=DecodeOptions)
    jpeg_encoder: str = "pil"
    retry_failed: bool = False
    claim: str = ""  # store.shard_fingerprint of the clips: commit refused if it differs
    # clip id -> reason: clips known to kill their worker, recorded as `error` unprocessed
    # (pipeline/isolation.py finds them)
    poisoned: dict[str, str] = field(default_factory=dict)


def _maybe_crash(done: int, total: int) -> None:
    """``<marker>`` crashes once; ``<marker>:N`` crashes N times (markers .0 .. .N-1)."""
    value = os.environ.get(CRASH_ENV)
    if not value or done < total // 2:
        return
    marker, _, times = value.partition(":")
    names = [marker] if not times else [f"{marker}.{i}" for i in range(int(times))]
    for name in names:
        try:
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def decode_options(spec: StoreSpec, base: DecodeOptions) -> DecodeOptions:
    """The store spec decides rates and sizes; ``base`` only how ffmpeg is run."""
    return DecodeOptions(sample_rate=spec.sample_rate, frame_rate=spec.frame_rate,
                         longer_side=spec.resize_longer_side, max_frames=spec.num_frames,
                         video_output=base.video_output, mjpeg_qscale=base.mjpeg_qscale,
                         ffmpeg=base.ffmpeg, threads=base.threads, timeout=base.timeout,
                         max_seconds=spec.clip_seconds + WINDOW_TOLERANCE_S)


def process_clip(clip: ClipSpec, spec: StoreSpec, job: ShardJob, opts: DecodeOptions
                 ) -> ClipRecord:
    """One clip -> one ClipRecord (never raises for bad input)."""
    return decode_fetched(clip, fetch_result(clip, job.source), spec, job, opts)


def decode_fetched(clip: ClipSpec, fetched: Fetched | FetchError, spec: StoreSpec,
                   job: ShardJob, opts: DecodeOptions) -> ClipRecord:
    """A fetched clip -> one ClipRecord; the fetched file is removed after."""
    if isinstance(fetched, FetchError):
        return failed_record(clip, fetched.status, fetched.reason)
    try:
        start = 0.0 if fetched.precut else clip.start
        decoded = decode_clip(fetched.path, start, start + (clip.end - clip.start), opts)
        return record_from_decoded(clip, fetched.uri, decoded, spec, job.jpeg_encoder)
    except MediaError as err:
        return failed_record(clip, err.status, err.reason, fetched.uri)
    except Exception as err:  # one clip's unexpected failure must not lose the shard
        return failed_record(clip, "error", f"{type(err).__name__}: {err}", fetched.uri)
    finally:
        fetched.cleanup()


def _copied_ok_records(store_path: str, shard_id: int, index: Any
                       ) -> tuple[dict[str, ClipRecord], list[str]]:
    """The committed ok clips of a shard whose stored bytes still match their checksum, as
    ClipRecords carrying those features; and the ids of the ok clips that do not (damaged
    or unreadable: they are re-processed from their media, never copied and re-certified).
    """
    rows = [r for r in index.to_pylist() if r["status"] == "ok"]
    if not rows:
        return {}, []
    store = open_store(store_path, shards=[shard_id])
    try:
        clips = store.read_shard(shard_id, [r["row"] for r in rows])
    except StoreError:  # the data file is missing or unreadable: redo every clip
        return {}, [r["clip_id"] for r in rows]
    finally:
        store.close()
    out, damaged = {}, []
    for r, c in zip(rows, clips, strict=True):
        if not store.checksum_ok(c):
            damaged.append(r["clip_id"])
            continue
        out[r["clip_id"]] = ClipRecord(
            clip_id=r["clip_id"], source_id=r["source_id"], start=r["start"], end=r["end"],
            uri=r["uri"], split=r["split"], labels=list(r["labels"]),
            fbank=c.fbank.numpy(), audio_frames=c.audio_frames, frames=list(c.frames),
            height=c.height, width=c.width, duration=c.duration, has_audio=c.has_audio,
            has_video=c.has_video,
            waveform=None if c.waveform is None else c.waveform.numpy())
    return out, damaged


def process_shard(job: ShardJob) -> dict[str, Any]:
    """Process and commit one shard; returns the writer's summary plus status counts."""
    t0, ru0 = time.perf_counter(), _cpu()
    if job.source.download_dir:
        sweep(job.source.download_dir)  # a killed worker's temporary downloads
    writer = open_writer(job.store)
    if job.claim:  # another build took the store: refuse before any work
        writer.check_claim(job.shard_id, job.claim)
    spec = writer.spec
    opts = decode_options(spec, job.decode)
    keep: dict[str, ClipRecord] = {}
    damaged: list[str] = []
    if job.retry_failed and job.shard_id in writer.committed_shards():
        keep, damaged = _copied_ok_records(job.store, job.shard_id,
                                           writer.shard_index(job.shard_id))
    records = []
    todo = [c for c in job.clips if c.clip_id not in job.poisoned and c.clip_id not in keep]
    with closing(prefetched(todo, job.source)) as downloads:  # fetched ahead, in order
        for i, clip in enumerate(job.clips):
            _maybe_crash(i, len(job.clips))
            if clip.clip_id in job.poisoned:
                records.append(failed_record(clip, "error", job.poisoned[clip.clip_id]))
            elif clip.clip_id in keep:
                records.append(keep[clip.clip_id])
            else:
                got_clip, fetched = next(downloads)
                assert got_clip is clip
                records.append(decode_fetched(clip, fetched, spec, job, opts))
    summary = writer.write_shard(job.shard_id, records, claim=job.claim)
    if os.environ.get(DELAY_ENV):
        time.sleep(float(os.environ[DELAY_ENV]))
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary.update(statuses=counts, reprocessed=len(records) - len(keep),
                   damaged_copies=damaged,
                   wall_s=time.perf_counter() - t0, cpu_s=_cpu() - ru0)
    return summary


def probe_clips(job: ShardJob) -> dict[str, Any]:
    """Process the job's clips and commit nothing: a task that dies here names its clip
    as one that kills its worker (pipeline/isolation.py)."""
    if job.source.download_dir:
        sweep(job.source.download_dir)
    spec = open_writer(job.store).spec
    opts = decode_options(spec, job.decode)
    return {"statuses": {c.clip_id: process_clip(c, spec, job, opts).status for c in job.clips}}


def failure_shard(job: ShardJob, reason: str) -> dict[str, Any]:
    """Commit a shard whose task could not finish: every clip gets status ``error``."""
    writer = open_writer(job.store)
    records = [failed_record(c, "error", reason) for c in job.clips]
    summary = writer.write_shard(job.shard_id, records, claim=job.claim)
    summary.update(statuses={"error": len(records)}, reprocessed=len(records), wall_s=0.0,
                   cpu_s=0.0)
    return summary


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
