"""Dataset fbank mean/std for normalisation (MAViL supp. B.1: "normalize the spectrogram
according to the mean and variance in each dataset"), as a distributed reduction.

Each shard task returns float64 sums over its ok clips of the chosen split; the driver
adds them up. Decision (documented in the README): the headline ``fbank_mean`` /
``fbank_std`` are over ALL 1024 frames of each clip, zero padding included, because that
is what AudioMAE/AST/CAV-MAE measured (their stats come from the padded loader output)
and what their checkpoints expect. The real-frames-only figures are stored beside them
(``fbank_mean_real`` / ``fbank_std_real``). The std is the pooled std over all values
(AST averages per-batch stds instead; the difference is small and this one is exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.engines import run_engine
from store import open_store, open_writer


@dataclass
class StatsJob:
    store: str
    shard_id: int
    split: str | None


def shard_sums(job: StatsJob) -> dict[str, float]:
    """Sums of one shard: n/sum/sumsq over all frames and over real frames only."""
    store = open_store(job.store, shards=[job.shard_id])  # reads one index part
    index = store.index()
    rows = [r for r in index.select(["shard", "row", "status", "split", "audio_frames",
                                     "has_audio"]).to_pylist()
            if r["status"] == "ok" and r["has_audio"]
            and (job.split is None or r["split"] == job.split)]
    out = {"clips": 0, "n": 0, "s": 0.0, "ss": 0.0, "n_real": 0, "s_real": 0.0, "ss_real": 0.0}
    if not rows:
        return out
    for r, clip in zip(rows, store.read_shard(job.shard_id, [r["row"] for r in rows]),
                       strict=True):
        f = clip.fbank.numpy().astype(np.float64)
        real = f[: r["audio_frames"]]
        out["clips"] += 1
        out["n"] += f.size
        out["s"] += float(f.sum())
        out["ss"] += float(np.square(f).sum())
        out["n_real"] += real.size
        out["s_real"] += float(real.sum())
        out["ss_real"] += float(np.square(real).sum())
    return out


def _mean_std(n: float, s: float, ss: float) -> tuple[float, float]:
    mean = s / n
    return mean, math.sqrt(max(ss / n - mean * mean, 0.0))


def compute_stats(path: str, split: str | None = "train", engine: str = "local",
                  workers: int = 2, address: str | None = None, write: bool = True
                  ) -> dict[str, Any]:
    """Reduce per-shard sums on the engine; write them into store.json (set_stats)."""
    writer = open_writer(path)
    jobs = [StatsJob(path, s, split) for s in sorted(writer.committed_shards())]
    total: dict[str, float] = {}
    for job, part in run_engine(engine, shard_sums, jobs, workers, 2, address):
        if isinstance(part, BaseException):
            raise RuntimeError(f"stats for shard {job.shard_id} failed: {part}") from part
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    if not total.get("n"):
        raise ValueError(f"no ok clips with audio in split {split!r} of {path}")
    mean, std = _mean_std(total["n"], total["s"], total["ss"])
    mean_r, std_r = _mean_std(total["n_real"], total["s_real"], total["ss_real"])
    stats = {"fbank_mean": mean, "fbank_std": std, "fbank_mean_real": mean_r,
             "fbank_std_real": std_r, "n_clips": int(total["clips"]),
             "split": split or "all", "frames": "all target_frames (zero padding included)"}
    if write:
        writer.set_stats(stats)
    return stats
