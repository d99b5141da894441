"""Per-host limits shared by every download of a process: requests at once, request starts
per second, and a pause when the host says "too many requests".

A shard task fetches several clips at once (pipeline/prefetch.py); they all take their
turn here, per host (``host:port`` of the first URL). ``slot`` waits until the host has
fewer than ``max_per_host`` requests open, its rate allows another start, and any pause
it asked for (HTTP 429 / 503 with Retry-After, yt-dlp's "Too Many Requests") is over --
never past the download's own deadline, which then fails as ``timeout``. One limiter per
(limit, rate) pair lives for the process (``limiter_for``), so the tries and backoffs of
``pipeline.sources.with_retries`` of all the task's downloads see one shared state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.deadline import Deadline


class SlotTimeout(Exception):
    """No turn on the host before the download's deadline."""


@dataclass
class _Host:
    active: int = 0
    next_start: float = 0.0    # monotonic time the rate allows the next request
    paused_until: float = 0.0  # monotonic time a 429 / 503 asked us to wait for


class HostLimiter:
    """``max_per_host`` requests at once per host (0: no limit), at most ``rate`` request
    starts per second per host (None: no limit)."""

    def __init__(self, max_per_host: int = 4, rate: float | None = None):
        self.max_per_host = max(0, int(max_per_host))
        self.interval = 1.0 / rate if rate else 0.0
        self._hosts: dict[str, _Host] = {}
        self._cond = threading.Condition()

    @contextmanager
    def slot(self, host: str, deadline: Deadline) -> Iterator[None]:
        """Hold one of ``host``'s request slots for the block (waits for one; raises
        SlotTimeout at ``deadline``)."""
        with self._cond:
            st = self._hosts.setdefault(host, _Host())
            while True:
                now = time.monotonic()
                ready_at = max(st.next_start, st.paused_until)
                free = not self.max_per_host or st.active < self.max_per_host
                if free and now >= ready_at:
                    break
                left = deadline.remaining()
                if left <= 0:
                    raise SlotTimeout(f"no turn on host {host} within the download's "
                                      f"{deadline.seconds:g}-s deadline")
                self._cond.wait(min(left, ready_at - now) if free else left)
            st.active += 1
            st.next_start = now + self.interval
        try:
            yield
        finally:
            with self._cond:
                st.active -= 1
                self._cond.notify_all()

    def pause(self, host: str, seconds: float) -> None:
        """No new request to ``host`` for ``seconds`` (the host asked us to slow down)."""
        with self._cond:
            st = self._hosts.setdefault(host, _Host())
            st.paused_until = max(st.paused_until, time.monotonic() + seconds)

    def active(self, host: str) -> int:
        with self._cond:
            return self._hosts[host].active if host in self._hosts else 0


_LIMITERS: dict[tuple[int, float | None], HostLimiter] = {}
_GUARD = threading.Lock()


def limiter_for(max_per_host: int, rate: float | None) -> HostLimiter:
    """The process's limiter for these settings (made on first use)."""
    key = (max(0, int(max_per_host)), rate or None)
    with _GUARD:
        if key not in _LIMITERS:
            _LIMITERS[key] = HostLimiter(*key)
        return _LIMITERS[key]


def host_of(url: str) -> str:
    """The limiter's key for ``url``: ``host:port`` (lower case), the scheme's default
    port omitted; the whole URL's scheme for a URL without a host."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return parts.scheme.lower() + ":"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port else host
