"""A hard wall-clock deadline for one download, however slowly its bytes arrive.

Per-read socket timeouts do not bound a download: a server sending one byte every half
second never lets a read time out. ``SocketWatchdog`` holds every socket a download opens
and shuts them all down when the ``Deadline`` passes, so the blocked read returns at once
and the download fails as ``timeout``. Both are per download and thread-safe: a bounded-
concurrency downloader gives each download its own pair.
"""

from __future__ import annotations

import socket
import threading
import time


class Deadline:
    """``seconds`` from now (monotonic clock)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def cap(self, timeout: float) -> float:
        """``timeout`` cut to the time left (at least 1 ms, so a socket call still fails
        with a timeout rather than blocking)."""
        return max(0.001, min(timeout, self.remaining()))


class SocketWatchdog:
    """Shut down every registered socket when ``deadline`` passes (a daemon timer)."""

    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(deadline.remaining(), self._fire)
        self._timer.daemon = True

    def __enter__(self) -> SocketWatchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._socks.clear()

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if not self.fired:
                return
        _shutdown(sock)  # registered after the deadline: cut at once

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass
