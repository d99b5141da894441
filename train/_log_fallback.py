"""Stand-in for train/observe.py (h10obs) until it lands: metrics.jsonl + summary.json.

Same calls as ``train.observe.make_logger``; delete this file when observe.py is merged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from train.resume import atomic_write_bytes


class _Logger:
    def __init__(self, run_dir: Path, rank: int, start_step: int = 0, log_every: int = 10
                 ) -> None:
        self.run_dir, self.main, self.last_step = Path(run_dir), rank == 0, start_step
        self.last: dict[str, float] = {}

    def start_epoch(self, epoch: int, steps: int | None, done: int = 0) -> None:
        self.epoch = epoch

    def step(self, step: int, out: dict, lr: float, samples: int, data_s: float,
             step_s: float) -> None:
        self.last_step = step
        self.last = {k: float(v) for k, v in out.items() if k.startswith("loss")}
        if self.main:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps({"kind": "train", "step": step, "lr": lr, **self.last}) + "\n")

    def print(self, message: str) -> None:
        if self.main:
            print(message, flush=True)

    def end_epoch(self) -> None:
        pass

    def finish(self, checkpoint: Any, status: str = "finished", extra: dict | None = None
               ) -> dict[str, Any]:
        summary = {"status": status, "checkpoint": str(checkpoint) if checkpoint else None,
                   "steps": self.last_step, "final": self.last, **(extra or {})}
        if self.main:
            atomic_write_bytes(self.run_dir / "summary.json", json.dumps(summary).encode())
            print(f"run {status}: {self.last_step} steps; checkpoint: {checkpoint}", flush=True)
        return summary


def make_logger(run_dir: Path, rank: int = 0, **kw: Any) -> _Logger:
    return _Logger(run_dir, rank, **kw)
