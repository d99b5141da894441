"""http(s) downloads: a hard deadline on the whole download, and redirects checked hop by hop.

- **Deadline.** Every socket the download opens is registered with a ``SocketWatchdog``
  (pipeline/deadline.py) that shuts it down when the deadline passes: connect, TLS
  handshake, headers and body are all cut, however slowly bytes trickle in. Each read
  also has the per-read ``timeout``; retries and their backoff share the one deadline.
- **Redirects** are followed here, not by requests, at most ``MAX_REDIRECTS`` hops. Each
  hop's URL must have an allowed http(s) scheme, may not downgrade https to http, and may
  leave the first URL's host only with ``SourceConfig.cross_host_redirects``. The final
  URL is returned (and recorded as the index ``uri``).
- **Slow down.** HTTP 429 and 503 are retried after at least their Retry-After (seconds
  or a date, capped at ``max_retry_after``), and pause the host for every download of the
  process (``with_retries`` with the URL's host, pipeline/hosts.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

from pipeline.deadline import Deadline, SocketWatchdog
from pipeline.hosts import host_of
from pipeline.sources import (
    FetchError,
    Retryable,
    SourceConfig,
    copy_bounded,
    download_deadline,
    with_retries,
)

MAX_REDIRECTS = 10
_CHUNK = 1 << 20


def check_redirect(src: str, dest: str, cfg: SourceConfig) -> None:
    """Raise ``download_error`` for a redirect hop ``src`` -> ``dest`` that is not allowed."""
    a, b = urlsplit(src), urlsplit(dest)
    scheme = b.scheme.lower()
    if scheme not in ("http", "https") or scheme not in cfg.allowed_schemes:
        raise FetchError("download_error", f"redirect to URL scheme {scheme!r} not allowed "
                         f"({dest[:200]})")
    if a.scheme.lower() == "https" and scheme == "http":
        raise FetchError("download_error", f"redirect from https to http refused ({dest[:200]})")
    if (a.hostname or "") != (b.hostname or "") and not cfg.cross_host_redirects:
        raise FetchError("download_error", f"cross-host redirect {a.hostname} -> {b.hostname} "
                         "refused (allow with --allow-cross-host-redirects)")


def _watched_session(watchdog: SocketWatchdog):  # -> requests.Session
    """A requests Session whose every new socket (direct or via a proxy) is registered
    with ``watchdog`` before anything is sent or received on it."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Conn(HTTPConnection):
        def _new_conn(self):  # type: ignore[no-untyped-def]
            sock = super()._new_conn()
            watchdog.register(sock)
            return sock

    class SConn(HTTPSConnection):
        def _new_conn(self):  # type: ignore[no-untyped-def]
            sock = super()._new_conn()
            watchdog.register(sock)
            return sock

    pools = {"http": type("Pool", (HTTPConnectionPool,), {"ConnectionCls": Conn}),
             "https": type("SPool", (HTTPSConnectionPool,), {"ConnectionCls": SConn})}

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            manager = super().proxy_manager_for(*args, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    for prefix in ("http://", "https://"):
        session.mount(prefix, Adapter(max_retries=0))
    return session


def _get_once(url: str, dest: str, cfg: SourceConfig, deadline: Deadline) -> str:
    """One try: follow the redirects, copy the body to ``dest``; returns the final URL."""
    import requests

    with SocketWatchdog(deadline) as watchdog, _watched_session(watchdog) as session:
        try:
            for _ in range(MAX_REDIRECTS + 1):
                t = deadline.cap(cfg.timeout)
                resp = session.get(url, stream=True, timeout=(t, t), allow_redirects=False)
                if not resp.is_redirect:
                    break
                nxt = urljoin(url, resp.headers["location"])
                resp.close()
                check_redirect(url, nxt, cfg)
                url = nxt
            else:
                raise FetchError("download_error", f"more than {MAX_REDIRECTS} redirects")
            with resp:
                _check_response(resp, url, cfg)
                copy_bounded(resp.iter_content(_CHUNK), dest, cfg, deadline)
            if watchdog.fired:  # cut at the deadline: a body without length ends "cleanly"
                raise FetchError("timeout", f"download exceeded its {deadline.seconds:g}-s "
                                 "deadline")
        except requests.RequestException as err:
            if watchdog.fired or deadline.expired():
                raise FetchError("timeout", f"download exceeded its {deadline.seconds:g}-s "
                                 "deadline") from err
            if isinstance(err, requests.Timeout) or "timed out" in str(err).lower():
                raise Retryable("timeout", f"no response within {cfg.timeout:g} s") from err
            if isinstance(err, requests.ConnectionError):
                raise Retryable("download_error", f"connection failed: {err}") from err
            raise FetchError("download_error", str(err)[:300]) from err
    return url


def _check_response(resp, url: str, cfg: SourceConfig) -> None:  # type: ignore[no-untyped-def]
    code = resp.status_code
    if code in (404, 410):
        raise FetchError("not_found", f"HTTP {code} for {url}")
    if code in (429, 503):  # the host asks us to slow down
        wait = retry_after(resp.headers.get("Retry-After"))
        said = f" (Retry-After {wait:g} s)" if wait is not None else ""
        raise Retryable("download_error", f"HTTP {code} for {url}{said}", throttled=True,
                        retry_after=wait)
    if code >= 500:
        raise Retryable("download_error", f"HTTP {code} for {url}")
    if code >= 400:
        raise FetchError("download_error", f"HTTP {code} for {url}")
    length = resp.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > cfg.max_bytes:
        raise FetchError("too_large", f"{length} bytes > limit {cfg.max_bytes}")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def fetch_http(url: str, dest: str, cfg: SourceConfig) -> str:
    """Download ``url`` to ``dest`` within the download deadline, retrying retryable
    failures with exponential backoff, each try taking its turn on the URL's host
    (pipeline/hosts.py); returns the final URL after redirects."""
    deadline = Deadline(download_deadline(cfg))
    return with_retries(lambda: _get_once(url, dest, cfg, deadline), cfg, deadline,
                        host_of(url))
