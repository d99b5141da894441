"""Per-process download folders inside ``--download-dir``, and removal of dead ones.

Each process downloads into its own folder ``mavil-work-XXXXXXXX`` holding a ``.lock``
file that the process keeps ``flock``-ed while it lives. The kernel releases the lock when
the process dies, however it dies (SIGKILL included), so the next run finds dead
workspaces by trying the lock and removes them whole: temporary downloads of a killed
worker never accumulate. Nothing but these folders is ever removed, and a live process's
folder never is (its lock is held; pid reuse does not matter). The folder is made under a
temporary name and renamed only once locked, so a sweeper never sees an unlocked live one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
import time

PREFIX = "mavil-work-"
_NEW = ".mavil-new-"      # a folder being set up (renamed to PREFIX... once locked)
_LOCK = ".lock"
_NEW_GRACE_S = 600.0      # a half-set-up folder older than this belongs to a dead process
_mine: dict[str, tuple[int, str, int]] = {}   # download dir -> (pid, workspace, lock fd)
_guard = threading.Lock()


def download_root(download_dir: str | None) -> str:
    return os.path.realpath(download_dir or tempfile.gettempdir())


def workspace(download_dir: str | None) -> str:
    """This process's own folder inside ``download_dir`` (made and locked on first use;
    the first use also sweeps the dead processes' folders)."""
    root = download_root(download_dir)
    with _guard:
        got = _mine.get(root)
        if got and got[0] == os.getpid() and os.path.isdir(got[1]):
            return got[1]
        os.makedirs(root, exist_ok=True)
        sweep(root)
        tmp = tempfile.mkdtemp(prefix=_NEW, dir=root)
        fd = os.open(os.path.join(tmp, _LOCK), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = os.path.join(root, PREFIX + os.path.basename(tmp)[len(_NEW):])
        os.rename(tmp, final)
        _mine[root] = (os.getpid(), final, fd)
        return final


def sweep(download_dir: str | None) -> int:
    """Remove the workspaces of dead processes in ``download_dir``; returns how many."""
    root = download_root(download_dir)
    removed = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith(_NEW):
            try:
                old = time.time() - entry.stat(follow_symlinks=False).st_mtime > _NEW_GRACE_S
            except OSError:
                continue
            if old:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        elif entry.name.startswith(PREFIX) and _remove_if_dead(entry.path):
            removed += 1
    return removed


def _remove_if_dead(path: str) -> bool:
    try:
        fd = os.open(os.path.join(path, _LOCK), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:  # renamed only once locked: a lock-less one is debris
        shutil.rmtree(path, ignore_errors=True)
        return True
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its process is alive
        os.close(fd)
        return False
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)
    return True
