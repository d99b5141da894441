"""The DataLoader-level figures of ``python -m store.bench``: N loader workers at once.

- :func:`loader_rate`: a dataset behind the loader the trainer uses (the batch ring) or a
  plain torch DataLoader, with N worker processes, the store's collate and pin_memory; or
  behind a DataLoader whose workers hand over no data at all (each batch's collate returns
  its length): the floor of torch's DataLoader machinery (index and result queues, the
  main process's iteration) for this work on this machine;
- :func:`parallel_rate`: the same per-worker loop as the one-worker figure, run by N
  independent processes at once, with no DataLoader at all. It measures what this machine
  gives N processes of this work: N x the one-worker rate assumes N idle cores that do not
  slow each other down, and the 2 vCPUs of the dev VM do not scale to 2x (two plain ffmpeg
  decodes at once are 1.49x one, ``pipeline bench``). The loader against it is what the
  DataLoader level itself costs (collate, inter-process handoff, the main process).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

# batches per worker before the clock starts: a ring worker's slots (K = 4 at the default
# prefetch) are first touched then - 28 MB of page faults at batch 4, start-up, not steady state
WARM_BATCHES = 8


class _Epochs(torch.utils.data.IterableDataset):
    """Epochs 0, 1, ... of a StreamingDataset in one DataLoader pass (a small store would
    otherwise restart the workers every few samples)."""

    def __init__(self, ds: Any, epochs: int) -> None:
        self.ds, self.epochs = ds, epochs

    def __iter__(self) -> Iterator[dict]:
        for e in range(self.epochs):
            self.ds.set_epoch(e)
            yield from self.ds  # deals this epoch's batches to the workers round-robin


def cpu_s(pids: list[int]) -> list[float] | None:
    """CPU seconds (user + system) so far of each live process, from /proc (None elsewhere)."""
    try:
        out = []
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
    return out


def batch_length(samples: list[Any]) -> int:
    """The collate of the floor: nothing of the batch leaves the worker but its length."""
    return len(samples)


def loader_rate(ds: Any, workers: int, batch_size: int, samples: int,
                kind: str = "ring") -> dict[str, float]:
    """``ds`` behind the loader the trainer uses (``kind="ring"``:
    store.batch_ring.RingLoader, as ResumableLoader and the map loader build it), a plain
    torch DataLoader (``"plain"``) or the DataLoader floor (``"floor"``: no data handed
    over, see the module doc): ``workers`` processes, the store's collate, pin_memory
    (active only with an accelerator). Timed after WARM_BATCHES batches of every worker
    (start-up excluded). Returns samples/s, CPU ms per sample of the workers and this
    process together and of this process alone (-1 where /proc is missing) and whether
    batches came pinned."""
    from torch.utils.data import DataLoader

    from store.batch_ring import RingLoader
    from store.jpeg import collate

    ds.batch_size = batch_size  # StreamingDataset deals batches of the DataLoader's size
    warm = workers * batch_size * WARM_BATCHES
    epochs = -(-(samples + warm) // len(ds.positions)) + 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pin_memory.*")  # no accelerator here
        kw = {"batch_size": batch_size, "num_workers": workers, "pin_memory": True}
        epochs_ds = _Epochs(ds, epochs)
        loader: Any = (
            RingLoader(epochs_ds, **kw) if kind == "ring" else
            DataLoader(epochs_ds, collate_fn=collate, **kw) if kind == "plain" else
            DataLoader(epochs_ds, collate_fn=batch_length, **kw))
        it = iter(loader)
        done, t0, c0, pinned, pids = 0, None, None, False, [os.getpid()]
        for batch in it:
            done += batch if kind == "floor" else len(batch["index"])
            if t0 is None and done >= warm:
                pids += [p.pid for p in mp.active_children()]  # the DataLoader's workers
                t0, c0, done = time.perf_counter(), cpu_s(pids), 0
                # audio: the GPU decode path's batches carry JPEG bytes, not video
                pinned = kind != "floor" and bool(batch["audio"].is_pinned())
            elif t0 is not None and done >= samples:
                break
        wall, c1 = time.perf_counter() - t0, cpu_s(pids)
        mapped = float(loader.ring.mapped) if kind == "ring" else -1.0  # slots mapped in all
        del it, loader
    res = {"samples_per_s": done / wall, "cpu_ms": -1.0, "main_cpu_ms": -1.0,
           "pinned": float(pinned), "slots_mapped": mapped}
    if c0 is not None and c1 is not None:
        res["cpu_ms"] = 1000 * (sum(c1) - sum(c0)) / done
        res["main_cpu_ms"] = 1000 * (c1[0] - c0[0]) / done
    return res


def parallel_rate(ds: Any, workers: int, samples: int,
                  streamed: Callable[[Any, int], tuple[float, float]]) -> dict[str, float]:
    """``workers`` forked processes (as DataLoader workers are), each running
    ``streamed(ds, samples)`` - the one-worker loop of the figure it is compared with - from a
    common start, each from its own epoch. Returns samples/s of them all together (all
    samples / time until the last one ends) and CPU ms per sample."""
    ctx = mp.get_context("fork")
    start, results = ctx.Barrier(workers + 1), ctx.Queue()

    def run(rank: int) -> None:
        torch.set_num_threads(1)
        ds.set_epoch(1000 + rank)  # other clips than the other processes, as workers read
        streamed(ds, 5)  # warm-up: caches, lazy imports
        start.wait()
        results.put(streamed(ds, samples))

    procs = [ctx.Process(target=run, args=(r,), daemon=True) for r in range(workers)]
    for proc in procs:
        proc.start()
    try:
        start.wait(timeout=600)
        t0 = time.perf_counter()
        got = [results.get(timeout=600) for _ in procs]
        wall = time.perf_counter() - t0
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    return {"samples_per_s": workers * samples / wall,
            "cpu_ms": 1000 * sum(c for _, c in got) / (workers * samples)}
