"""Where shard tasks run: ``local`` (one process per shard task), ``ray`` or ``dask``;
``auto`` (the default) picks one of them (``choose_engine``).

Each engine yields ``(job, result)`` pairs as shards finish; ``result`` is the task's
summary dict, or the exception that remained after the engine's retries (Ray
``max_retries``, Dask ``retries`` plus its worker-death accounting, local: a task whose
process died is re-run, each death one try). Ray and Dask are imported only here, inside
the functions that use them.

The local engine runs every task in its own process, forked from a forkserver that has
imported the task modules once, at most ``workers`` at a time. A process that dies (a
SIGKILL, the OOM killer) is charged to the one task it ran, never to the others running
beside it. Each task process watches a pipe from the driver (its "lifeline") and exits as
soon as the driver is gone, however the driver died: no orphan workers.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import Any

ENGINES = ("auto", "ray", "dask", "local")
DASK_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://")  # Dask scheduler addresses
Task = Callable[[Any], dict]
# Exceptions that mean "the process running the task died", by engine.
WORKER_DEATHS = ("WorkerDied", "WorkerCrashedError", "KilledWorker", "NodeDiedError",
                 "OutOfMemoryError")


class WorkerDied(RuntimeError):
    """The local process running a task died before returning (a signal or an exit)."""


def is_worker_death(result: object) -> bool:
    return isinstance(result, BaseException) and type(result).__name__ in WORKER_DEATHS


def choose_engine(engine: str, address: str | None = None,
                  environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(engine, why)``. ``auto``: the cluster that ``address`` or ``RAY_ADDRESS`` names
    (a Dask scheduler for tcp:// and the other Dask schemes, else Ray), local processes
    when neither names one. An explicit engine is kept (``ray`` without an address starts
    an embedded Ray, or joins ``RAY_ADDRESS``)."""
    env = os.environ if environ is None else environ
    if engine != "auto":
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
        return engine, "as asked (--engine)"
    if address:
        if address.startswith(DASK_SCHEMES):
            return "dask", f"auto: --address {address} is a Dask scheduler"
        return "ray", f"auto: --address {address} names a Ray cluster"
    if env.get("RAY_ADDRESS"):
        return "ray", f"auto: RAY_ADDRESS={env['RAY_ADDRESS']} names a Ray cluster"
    return "local", "auto: no --address or RAY_ADDRESS, so local processes"


# What the forkserver imports once, before it forks any task process (pipeline/task_preload),
# and the command's own module: multiprocessing re-runs the driver's main module in every
# task process (its "main module fix-up"), which then finds its imports done (-3.5 ms a task)
TASK_PRELOAD = ["pipeline.task_preload", "pipeline.cli"]
# h5py (~20 ms), for a build of an HDF5 store; the tasks of a zarr build never import it
HDF5_PRELOAD = ["h5py"]


def _context(extra: list[str] | None = None) -> mp.context.BaseContext:
    """forkserver with the task modules preloaded: each task process is a cheap fork of a
    clean process that has imported them once (spawn would re-import per task; plain fork
    would copy the driver's threads). The preload counts only when the forkserver starts."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(TASK_PRELOAD + (extra or []))
    return ctx


def start_local_engine(store_format: str = "zarr") -> None:
    """Start the forkserver now, so that its imports (~0.3 s: zarr, numpy, pyarrow, fsspec)
    run while the driver reads the manifest and creates the store, not after; the first task
    then forks at once. Idempotent; ``run_local`` starts it anyway when this was not
    called (then an HDF5 build's tasks import h5py each)."""
    from multiprocessing import forkserver

    _context(HDF5_PRELOAD if store_format == "hdf5" else None)
    forkserver.ensure_running()


def _watch_driver(lifeline: Connection) -> None:
    """Block on the lifeline; EOF means the driver closed it or died: exit now."""
    try:
        lifeline.recv()
    except (EOFError, OSError):
        pass
    os._exit(1)


def _task_main(task: Task, job: Any, result: Connection, lifeline: Connection) -> None:
    threading.Thread(target=_watch_driver, args=(lifeline,), daemon=True).start()
    try:
        out: tuple[str, Any] = ("ok", task(job))
    except Exception as err:  # the task itself raised: send it back (retried by the driver)
        out = ("raised", err)
    try:
        result.send(out)
    except Exception:  # an exception that does not pickle
        result.send(("raised", RuntimeError(f"{type(out[1]).__name__}: {out[1]}"[:500])))


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_local(task: Task, jobs: list, workers: int, max_retries: int) -> Iterator[tuple]:
    """One forkserver process per task, at most ``workers`` at a time; a task whose
    process dies is re-run up to ``max_retries`` times, then yields ``WorkerDied``. When
    tasks end, the next ones start before the driver joins the old processes and takes the
    results."""
    ctx = _context()
    pending = deque(jobs)
    tries = {id(j): 0 for j in jobs}
    running: dict[Connection, tuple[Any, Any, Connection]] = {}  # result pipe -> task

    def start_tasks() -> None:
        while pending and len(running) < workers:
            job = pending.popleft()
            recv, send = ctx.Pipe(duplex=False)
            life_r, life_w = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_task_main, args=(task, job, send, life_r),
                               daemon=True, name=f"mavil-task-{id(job):x}")
            proc.start()
            send.close()
            life_r.close()
            running[recv] = (proc, job, life_w)

    ended: list[tuple[Any, Any, Connection, str, Any]] = []  # results in, not yet joined
    try:
        while pending or running:
            start_tasks()
            for recv in wait(list(running)):
                proc, job, life_w = running.pop(recv)
                try:
                    kind, value = recv.recv()
                except (EOFError, OSError):  # died before sending: charge this task only
                    proc.join()
                    kind, value = "died", _death(proc.exitcode)
                finally:
                    recv.close()
                tries[id(job)] += kind != "ok"
                if kind != "ok" and tries[id(job)] <= max_retries:
                    pending.append(job)
                    kind = "retry"
                ended.append((proc, job, life_w, kind, value))
            start_tasks()  # the next tasks fork before these exit and the driver takes results
            while ended:
                proc, job, life_w, kind, value = ended.pop(0)
                proc.join()
                life_w.close()
                if kind == "ok":
                    yield job, value
                elif kind == "died":
                    yield job, WorkerDied(f"worker died {tries[id(job)]} times (last: {value})")
                elif kind == "raised":
                    yield job, value
    finally:
        for proc, _, life_w in running.values():  # driver interrupted: stop the tasks
            life_w.close()
            proc.kill()
            proc.join()
        for proc, _, life_w, _, _ in ended:  # done already, exiting on their own
            proc.join()
            life_w.close()


@contextmanager
def engine_session(engine: str, workers: int, address: str | None = None
                   ) -> Iterator[str | None]:
    """Keep one cluster up across several ``run_engine`` calls (yields the address to
    give them): Ray is initialised once, Dask's LocalCluster started once; local: none."""
    engine = choose_engine(engine, address)[0]
    if engine == "ray":
        with _ray_session(workers, address):
            yield address
    elif engine == "dask" and not address:
        from dask.distributed import LocalCluster

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                          dashboard_address=None, silence_logs=logging.ERROR) as cluster:
            yield cluster.scheduler_address
    else:
        yield address


@contextmanager
def _ray_session(workers: int, address: str | None) -> Iterator[None]:
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": logging.ERROR}
    # a Ray job's driver (the workflow runner's steps) has RAY_ADDRESS: join that cluster
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, **kwargs)
    else:
        # embedded cluster: workers use this interpreter as it is, instead of Ray's
        # `uv run` hook re-creating the environment in a copy of the working dir
        os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
        ray.init(num_cpus=workers, object_store_memory=100 * 1024 * 1024, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def run_ray(task: Task, jobs: list, workers: int, max_retries: int,
            address: str | None = None) -> Iterator[tuple]:
    import ray

    with _ray_session(workers, address):
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
    if engine == "auto":
        engine = choose_engine(engine, address)[0]
    if engine == "local":
        return run_local(task, jobs, workers, max_retries)
    if engine == "ray":
        return run_ray(task, jobs, workers, max_retries, address)
    if engine == "dask":
        return run_dask(task, jobs, workers, max_retries, address)
    raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
