"""Where shard tasks run: ``local`` (a process pool), ``ray`` or ``dask``.

Each engine yields ``(job, result)`` pairs as shards finish; ``result`` is the task's
summary dict, or the exception that remained after the engine's retries (Ray
``max_retries``, Dask ``retries`` plus its worker-death accounting, local: the pool is
rebuilt after a worker death and the in-flight shards are re-submitted). Ray and Dask
are imported only here, inside the functions that use them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

ENGINES = ("ray", "dask", "local")
Task = Callable[[Any], dict]


def _context() -> mp.context.BaseContext:
    """forkserver with the task modules preloaded: each worker is a cheap fork of a clean
    process that has imported torch once (spawn would re-import per worker; plain fork
    would copy the driver's threads)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pipeline.shard_task", "pipeline.stats"])
    return ctx


def run_local(task: Task, jobs: list, workers: int, max_retries: int) -> Iterator[tuple]:
    """A local process pool; a killed worker breaks the pool, so rebuild it and re-submit
    the shards that were in flight (each such death counts as one try)."""
    pending = list(jobs)
    tries = {id(j): 0 for j in jobs}
    while pending:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_context())
        inflight: dict = {}
        broken = False
        try:
            while (pending or inflight) and not broken:
                while pending and len(inflight) < workers:
                    job = pending.pop(0)
                    inflight[pool.submit(task, job)] = job
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    job = inflight.pop(fut)
                    try:
                        yield job, fut.result()
                    except BrokenProcessPool:
                        broken = True
                        inflight[fut] = job  # charged below with the others in flight
                    except Exception as err:  # the task itself raised
                        tries[id(job)] += 1
                        if tries[id(job)] > max_retries:
                            yield job, err
                        else:
                            pending.append(job)
            for job in inflight.values():
                tries[id(job)] += 1
                if tries[id(job)] > max_retries:
                    yield job, RuntimeError(f"worker died {tries[id(job)]} times")
                else:
                    pending.append(job)
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)


def run_ray(task: Task, jobs: list, workers: int, max_retries: int,
            address: str | None = None) -> Iterator[tuple]:
    import ray

    started = False
    # a Ray job's driver (the workflow runner's steps) has RAY_ADDRESS: join that cluster
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.ERROR}
        if address:
            ray.init(address=address, **kwargs)
        else:
            # embedded cluster: workers use this interpreter as it is, instead of Ray's
            # `uv run` hook re-creating the environment in a copy of the working dir
            os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
            ray.init(num_cpus=workers, object_store_memory=100 * 1024 * 1024, **kwargs)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=max_retries,
                            retry_exceptions=max_retries > 0)(task)
        refs = {remote.remote(job): job for job in jobs}
        waiting = list(refs)
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                try:
                    yield refs[ref], ray.get(ref)
                except Exception as err:  # RayTaskError, WorkerCrashedError, ...
                    yield refs[ref], err
    finally:
        if started:
            ray.shutdown()


def run_dask(task: Task, jobs: list, workers: int, max_retries: int,
             address: str | None = None) -> Iterator[tuple]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if address:
        client = Client(address)
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futures = {client.submit(task, job, retries=max_retries, pure=False,
                                 key=f"shard-{job.shard_id:06d}-{id(job):x}"): job
                   for job in jobs}
        for fut in as_completed(list(futures)):
            try:
                yield futures[fut], fut.result()
            except Exception as err:  # KilledWorker, task errors after retries
                yield futures[fut], err
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_engine(engine: str, task: Task, jobs: list, workers: int, max_retries: int = 3,
               address: str | None = None) -> Iterator[tuple]:
    if not jobs:
        return iter(())
    if engine == "local":
        return run_local(task, jobs, workers, max_retries)
    if engine == "ray":
        return run_ray(task, jobs, workers, max_retries, address)
    if engine == "dask":
        return run_dask(task, jobs, workers, max_retries, address)
    raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
