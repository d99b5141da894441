"""Resume state: the training checkpoints of a RUN directory (write, prune, find, load).

Layout (the contract in :mod:`train.trained`)::

    RUN/checkpoints/step_00001200.pt   every ``train.ckpt_every`` steps and at each epoch end
    RUN/checkpoints/epoch_0003.pt      a hard link to the step file written at that epoch end
    RUN/checkpoints/last.pt            a hard link to the newest step file

Every file is written as a temp file in the same folder, fsynced, renamed into place and the
folder fsynced, so a kill at any moment leaves the previous files intact and never a
half-written file under a final name (a temp file a kill leaves behind is removed on the
next start). ``last.pt`` moves only after the new step file is complete. Only the newest
``keep_last`` step files are kept; epoch files stay (``train average`` reads them).

A checkpoint holds tensors and plain containers only (``torch.load(weights_only=True)``):
``model`` (bare state dict), ``optimizer``, ``scheduler``, ``scaler``, ``loader`` and
``rng`` (one entry per rank), ``step``, ``epoch``, ``world_size``, ``config`` (plain dict)
and ``format_version``.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from store.atomic import atomic_write, atomic_write_bytes
from store.backends.fs import fsync_dir
from train.checkpoints import CheckpointError

FORMAT_VERSION = 1
CKPT_DIR = "checkpoints"
LAST = "last.pt"
_STEP = re.compile(r"^step_(\d{8})\.pt$")
# Fault injection for the crash tests: "kill_in_save:STEP" SIGKILLs this process halfway
# through writing the checkpoint of optimizer step STEP (the temp file is half written);
# "kill_after_save:STEP" right after that checkpoint is complete.
FAULT_ENV = "MAVIL_TRAIN_FAULT"


def _fault(step: int, kind: str = "kill_in_save") -> bool:
    return os.environ.get(FAULT_ENV, "") == f"{kind}:{step}"


def atomic_torch_save(path: Path, obj: Any, step: int = -1) -> Path:
    """``torch.save`` to ``path`` whole or not at all (``store.atomic``)."""
    def write(fh: Any) -> None:
        torch.save(obj, fh)
        if _fault(step):  # the crash test: die with the temp file half written
            fh.flush()
            fh.truncate(fh.tell() // 2)
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    return atomic_write(path, write)


def _link(src: Path, dst: Path) -> None:
    """Point ``dst`` at ``src``'s bytes atomically (hard link, else a copy)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # a file system without hard links: copy
        atomic_write_bytes(dst, src.read_bytes())
        return
    os.replace(tmp, dst)
    fsync_dir(str(dst.parent))


def step_file(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:08d}.pt"


def epoch_file(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"epoch_{epoch:04d}.pt"


def last_file(run_dir: Path) -> Path:
    return Path(run_dir) / CKPT_DIR / LAST


def step_files(run_dir: Path) -> list[Path]:
    """The run's step checkpoints, oldest first."""
    folder = Path(run_dir) / CKPT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _STEP.match(p.name))


RUN_PARTS = ("checkpoints", "tb", "images", "metrics.jsonl", "summary.json", "config.yaml")


def clear_run(run_dir: Path) -> None:
    """``--fresh``: remove what a previous run wrote into RUN (only what the trainer writes)."""
    import shutil

    for part in RUN_PARTS:
        p = Path(run_dir) / part
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def remove_stale_temps(run_dir: Path) -> list[Path]:
    """Temp files a kill left in the checkpoint folder (never a final name)."""
    folder = Path(run_dir) / CKPT_DIR
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_training_state(run_dir: Path, state: dict[str, Any], keep_last: int,
                        epoch_end: int | None = None) -> Path:
    """Write the step file, move ``last.pt`` (and the epoch file) to it, prune old steps."""
    step = int(state["step"])
    path = atomic_torch_save(step_file(run_dir, step), state, step)
    if epoch_end is not None:
        _link(path, epoch_file(run_dir, epoch_end))
    _link(path, last_file(run_dir))
    for old in step_files(run_dir)[: -max(1, int(keep_last))]:
        old.unlink(missing_ok=True)
    if _fault(step, "kill_after_save"):
        os.kill(os.getpid(), signal.SIGKILL)
    return path


def load_state(path: Path) -> dict[str, Any]:
    """A training checkpoint read with ``weights_only=True``; errors name the file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"{path}: refused: it holds a pickled Python object that could run code "
                f"when loaded; only tensors and plain containers are accepted ({first[:200]})"
            ) from None
        raise CheckpointError(f"{path}: truncated or damaged ({first[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or damaged ({first[:200]})") from None
    if not isinstance(state, dict) or not {"model", "config", "step"} <= set(state):
        raise CheckpointError(f"{path}: not a training checkpoint of this project")
    return state


def load_resume_state(run_dir: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint of a run, or None when it has none.

    A damaged ``last.pt`` is not skipped silently: the error names it and the newest step
    file that does load, so the user decides (move the damaged file away, or ``--fresh``).
    """
    last = last_file(run_dir)
    if not last.exists():
        return None
    try:
        return load_state(last), last
    except CheckpointError as exc:
        good = None
        for p in reversed(step_files(run_dir)):
            if p.exists() and os.path.samefile(p, last):
                continue
            try:
                load_state(p)
                good = p
                break
            except CheckpointError:
                continue
        hint = (f"the last good checkpoint is {good}; move the damaged file(s) away "
                f"(the step file of {last.name} too) to resume from it, or use --fresh"
                if good else "no earlier checkpoint loads; use --fresh to start over")
        raise CheckpointError(f"{exc}; {hint}") from None


# --------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors / plain containers."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
    }
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
