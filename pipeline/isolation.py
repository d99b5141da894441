"""Run shard tasks so that a clip that kills its worker fails alone.

A clip can kill the process decoding it (a decoder crash, the OOM killer). The engines
charge such a death only to the shard that was running in that process and retry it. If
the shard still dies after its retries, it is split: every clip runs once more as its own
task that commits nothing (``probe_clips``); the clips whose task dies are the poisoned
ones. The shard is then run again with those clips recorded as ``error`` ("worker crashed
while processing this clip ...") and every other clip processed as usual. When no single
clip kills a worker (the deaths came from elsewhere), the shard's failure stands and the
caller commits it as before. Works the same on every engine: it needs only the deaths
each engine reports (pipeline/engines.py ``is_worker_death``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from pipeline.engines import engine_session, is_worker_death, run_engine
from pipeline.shard_task import ShardJob, probe_clips, process_shard


def run_shards(engine: str, jobs: list[ShardJob], workers: int, max_retries: int = 3,
               address: str | None = None) -> Iterator[tuple[ShardJob, object]]:
    """``run_engine(engine, process_shard, jobs, ...)`` plus poisoned-clip isolation;
    yields ``(job, summary or exception)`` for every job, once. One cluster serves the
    passes."""
    if not jobs:
        return
    with engine_session(engine, workers, address) as addr:
        yield from _run_isolating(engine, jobs, workers, max_retries, addr)


def _run_isolating(engine: str, jobs: list[ShardJob], workers: int, max_retries: int,
                   address: str | None) -> Iterator[tuple[ShardJob, object]]:
    died: list[tuple[ShardJob, BaseException]] = []
    for job, result in run_engine(engine, process_shard, jobs, workers, max_retries, address):
        if is_worker_death(result):
            died.append((job, result))  # type: ignore[arg-type]
        else:
            yield job, result
    if not died:
        return
    probes = [dataclasses.replace(job, clips=[clip], poisoned={})
              for job, _ in died for clip in job.clips]
    poisoned: dict[int, dict[str, str]] = {}
    for probe, result in run_engine(engine, probe_clips, probes, workers, 0, address):
        if is_worker_death(result):
            reason = f"worker crashed while processing this clip ({_brief(result)})"
            poisoned.setdefault(probe.shard_id, {})[probe.clips[0].clip_id] = reason
    reruns = []
    for job, err in died:
        if job.shard_id in poisoned:
            reruns.append(dataclasses.replace(job, poisoned=poisoned[job.shard_id]))
        else:
            yield job, err
    yield from run_engine(engine, process_shard, reruns, workers, max_retries, address)


def _brief(err: object) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:200]
