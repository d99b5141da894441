"""Local files written whole or not at all: the one temp-file + fsync + rename writer.

A reader (or a process that restarts after a kill) sees the old file or the new one, never
half of one: the bytes go to a hidden temp name beside the target, are flushed and fsynced,
the temp file is renamed over the target (POSIX rename is atomic) and the directory is
fsynced so the rename survives a power cut. A failed or interrupted write removes its temp
file; a SIGKILL leaves only a hidden ``.<name>.*.tmp`` beside the target, never the target
half written. Every package writes its small local files through here (checkpoints,
configs, summaries, predictions, reports, workflow state); shard data files go through
``store.backends.fs.write_then_rename`` (directories too) and object stores through
single-object PUTs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from store.backends.fs import fsync_dir


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(fh)`` on a temp file beside ``path``, then make it ``path`` in one step.

    The file gets the usual mode (``0o666`` less the umask), not mkstemp's ``0o600``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(str(path.parent))
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
