"""What users see of a run: progress bars, TensorBoard, ``metrics.jsonl`` and the summary.

Only rank 0 observes; every other rank gets a :class:`NullLogger` with the same methods::

    log = make_logger(run_dir, rank, start_step=ckpt_step, log_every=10)
    for epoch in range(start_epoch, epochs):
        log.start_epoch(epoch, steps_in_epoch, done=steps_already_done_in_this_epoch)
        for batch in loader:                        # t0 = before next(loader)
            ...                                     # t1 = batch arrived; t2 = optimizer stepped
            step += 1
            log.step(step, out, lr=lr, samples=global_batch,
                     data_s=t1 - t0, step_s=t2 - t0)  # out: the model's output dict
        log.end_epoch()
    log.finish(checkpoint=path_of_last_pt)          # prints + writes RUN/summary.json

``step`` numbers are global optimizer steps counted from 1; a checkpoint taken after step S
resumes with ``start_step=S`` and logs S+1 onwards.

* Loss terms: every 0-dim entry of the output dict whose key starts with ``loss`` (MAViL:
  ``loss`` = Eq. 4 / Eq. 6, ``loss_recon`` = L_r, ``loss_recon_audio`` / ``loss_recon_video``,
  ``loss_inter``, ``loss_intra``; CAV-MAE ``loss_mae*``, ``loss_c``; AV-MAE ``loss_a`` /
  ``loss_v``) or ends with ``_acc`` (CAV-MAE ``c_acc``). :func:`loss_terms` picks them. They
  are summed on the device each step (no host sync) and averaged over each ``log_every``
  window, when one ``.item()`` sync per term happens.
* Every window writes one JSON object per line to ``RUN/metrics.jsonl`` (flushed) with
  ``kind: "train"``, ``step``, ``epoch`` (counted from 1), ``time_s`` (wall time of the
  run, cumulative over resumes), ``lr``, ``samples_per_s``, ``data_wait`` (fraction of step
  time waiting for data), ``step_s`` and the loss terms, and the same scalars to
  TensorBoard (``RUN/tb``, tags ``train/<name>``). :meth:`RunLogger.scalars` logs other
  kinds (``eval``...); :meth:`RunLogger.image` shows a PNG (the reconstruction figures of
  :mod:`train.recon_figure`) in TensorBoard.
* Resume: records past ``start_step`` (written after the checkpoint, before the kill) and a
  torn last line are dropped (the file is rewritten atomically); TensorBoard gets
  ``purge_step = start_step + 1`` so events of the lost steps are hidden on reading.
* Progress: one tqdm bar per epoch; its postfix shows the loss terms, lr, samples/s and
  data-wait %. :meth:`RunLogger.print` prints above the bar.
* :meth:`RunLogger.finish` prints the summary and writes ``RUN/summary.json`` atomically:
  ``status`` (``"finished"`` unless told otherwise), ``checkpoint``, ``steps``, ``epoch``,
  ``time_s``, ``final`` (the last window's scalars), plus any ``extra`` keys.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from store.atomic import atomic_write_text

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
TB_DIR = "tb"
_NOT_SCALARS = ("kind", "step", "epoch", "time_s")
# shown in the bar, in this order, with these short names (others are logged, not shown)
_BAR_TERMS = {"loss": "loss", "loss_recon_audio": "rec_a", "loss_recon_video": "rec_v",
              "loss_inter": "inter", "loss_intra": "intra", "loss_mae": "mae", "loss_c": "c",
              "loss_a": "rec_a", "loss_v": "rec_v"}


def loss_terms(out: Mapping[str, Any]) -> dict[str, torch.Tensor | float]:
    """The scalar loss terms (and contrastive accuracies) of a model's output dict."""
    terms: dict[str, torch.Tensor | float] = {}
    for key, value in out.items():
        if not (key.startswith("loss") or key.endswith("_acc")):
            continue
        if torch.is_tensor(value) and value.ndim == 0:
            terms[key] = value.detach()
        elif isinstance(value, (int, float)):
            terms[key] = float(value)
    return terms


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON whole or not at all: a reader sees the old file or the new one."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a RUN dir or the file); a torn last line is skipped."""
    p = Path(path)
    p = p / METRICS if p.is_dir() else p
    if not p.is_file():
        return []
    records = []
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut short
        if isinstance(rec, dict):
            records.append(rec)
    return records


def truncate_metrics(path: Path, start_step: int) -> list[dict[str, Any]]:
    """Keep the records with ``step <= start_step``; rewrite the file atomically if needed."""
    if not path.is_file():
        return []
    kept = [r for r in read_metrics(path) if int(r.get("step", 0)) <= start_step]
    lines = "".join(json.dumps(r) + "\n" for r in kept)
    if lines != path.read_text():
        atomic_write_text(path, lines)
    return kept


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.2e}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class RunLogger:
    """Rank-0 run logger: tqdm bar per epoch, TensorBoard scalars, metrics.jsonl, summary."""

    def __init__(self, run_dir: str | Path, start_step: int = 0, log_every: int = 10,
                 tensorboard: bool = True, progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_every = max(1, int(log_every))
        self.progress = progress
        self.start_step = self.last_step = int(start_step)
        kept = truncate_metrics(self.run_dir / METRICS, self.start_step)
        train = [r for r in kept if r.get("kind", "train") == "train"]
        self.last: dict[str, float] = {k: v for k, v in (train[-1] if train else {}).items()
                                       if isinstance(v, (int, float)) and k != "step"}
        self._time_offset = float(kept[-1].get("time_s", 0.0)) if kept else 0.0
        self._t0 = time.perf_counter()
        self._jsonl = open(self.run_dir / METRICS, "a")  # noqa: SIM115 - lives with the run
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = self.start_step + 1 if self.start_step else None
            self._tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=purge)
        self._bar: tqdm | None = None
        self.epoch = 0
        self._reset_window()

    # ------------------------------------------------------------------ per step
    def _reset_window(self) -> None:
        self._sums: dict[str, torch.Tensor | float] = {}
        self._n = 0
        self._samples = 0
        self._data_s = 0.0
        self._step_s = 0.0

    def start_epoch(self, epoch: int, steps: int | None, done: int = 0) -> None:
        """Open the bar of the loop's epoch index ``epoch`` (from 0); it is shown and logged
        counted from 1, as the epoch files ``checkpoints/epoch_NNNN.pt`` written at its end
        are. ``done`` steps of it already ran (a resumed epoch)."""
        self.end_epoch()
        self.epoch = int(epoch) + 1
        if self.progress:
            self._bar = tqdm(total=steps, initial=done, desc=f"epoch {self.epoch}", unit="step",
                             dynamic_ncols=True, mininterval=0.5, file=sys.stderr)

    def step(self, step: int, out: Mapping[str, Any], lr: float, samples: int,
             data_s: float, step_s: float) -> None:
        """Account one optimizer step; every ``log_every`` steps write a record."""
        for key, value in loss_terms(out).items():
            prev = self._sums.get(key)
            self._sums[key] = value if prev is None else prev + value
        self._n += 1
        self._samples += int(samples)
        self._data_s += float(data_s)
        self._step_s += float(step_s)
        self._lr = float(lr)
        self.last_step = int(step)
        if self._bar is not None:
            self._bar.update(1)
        if self._n >= self.log_every:
            self.flush_window()

    def flush_window(self) -> dict[str, float] | None:
        """Write the pending window now (also called at each epoch end)."""
        if not self._n:
            return None
        rec: dict[str, Any] = {"kind": "train", "step": self.last_step, "epoch": self.epoch,
                               "time_s": round(self.elapsed(), 3), "lr": self._lr,
                               "samples_per_s": self._samples / max(self._step_s, 1e-12),
                               "data_wait": self._data_s / max(self._step_s, 1e-12),
                               "step_s": self._step_s / self._n}
        for key, total in self._sums.items():
            rec[key] = float(total) / self._n  # the window's one host sync per term
        self._write(rec)
        self.last = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and k != "step"}
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(rec), refresh=False)
        self._reset_window()
        return rec

    def _postfix(self, rec: Mapping[str, Any]) -> str:
        parts = [f"{short}={_fmt(rec[k])}" for k, short in _BAR_TERMS.items() if k in rec]
        parts += [f"lr={rec['lr']:.2e}", f"{rec['samples_per_s']:.1f} samples/s",
                  f"data {100 * rec['data_wait']:.0f}%"]
        return " ".join(parts)

    def _write(self, rec: Mapping[str, Any]) -> None:
        self._jsonl.write(json.dumps(rec) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            kind = rec.get("kind", "train")
            for key, value in rec.items():
                if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{kind}/{key}", value, rec["step"])

    # ------------------------------------------------------------------ other records
    def scalars(self, step: int, values: Mapping[str, float], kind: str = "eval") -> None:
        """Log other scalars (evaluation, teacher stats...) as a ``kind`` record."""
        rec = {"kind": kind, "step": int(step), "epoch": self.epoch,
               "time_s": round(self.elapsed(), 3), **{k: float(v) for k, v in values.items()}}
        self._write(rec)

    def image(self, step: int, tag: str, png: str | Path) -> None:
        """Show a PNG the run wrote (e.g. a reconstruction figure) in TensorBoard too."""
        if self._tb is None:
            return
        import matplotlib.image as mpimg

        pixels = mpimg.imread(str(png))[..., :3]  # H, W, 3 floats in [0, 1]
        self._tb.add_image(tag, pixels, int(step), dataformats="HWC")

    def print(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def end_epoch(self) -> None:
        self.flush_window()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.flush()

    # ------------------------------------------------------------------ the end
    def elapsed(self) -> float:
        """Wall seconds of the run, summed over every resumed process."""
        return self._time_offset + time.perf_counter() - self._t0

    def finish(self, checkpoint: str | Path | None, status: str = "finished",
               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Print the run's summary and write ``RUN/summary.json``; closes the logger."""
        self.end_epoch()
        summary: dict[str, Any] = {
            "status": status, "checkpoint": str(checkpoint) if checkpoint else None,
            "steps": self.last_step, "epoch": self.epoch, "time_s": round(self.elapsed(), 3),
            "final": self.last, **dict(extra or {})}
        write_json_atomic(self.run_dir / SUMMARY, summary)
        terms = ", ".join(f"{k} {_fmt(v)}" for k, v in self.last.items()
                          if k.startswith("loss") or k.endswith("_acc"))
        print(f"run {status}: {self.last_step} steps (epoch {self.epoch}) in "
              f"{_duration(summary['time_s'])}", flush=True)
        if terms:
            print(f"  final losses: {terms}", flush=True)
        print(f"  checkpoint: {checkpoint}", flush=True)
        print(f"  logs: {self.run_dir / METRICS}, TensorBoard: {self.run_dir / TB_DIR}",
              flush=True)
        self.close()
        return summary

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self._jsonl.closed:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullLogger:
    """What ranks other than 0 get: the same methods, doing nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.last: dict[str, float] = {}
        self.last_step = int(kwargs.get("start_step", 0))

    def step(self, step: int, *args: Any, **kwargs: Any) -> None:
        self.last_step = int(step)

    def finish(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {}

    def elapsed(self) -> float:
        return 0.0

    def __getattr__(self, name: str) -> Any:  # start_epoch, scalars, image, print, ...
        return lambda *args, **kwargs: None

    def __enter__(self) -> NullLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def make_logger(run_dir: str | Path, rank: int = 0, **kwargs: Any) -> RunLogger | NullLogger:
    """A :class:`RunLogger` on rank 0, a :class:`NullLogger` elsewhere."""
    return RunLogger(run_dir, **kwargs) if rank == 0 else NullLogger(run_dir, **kwargs)
