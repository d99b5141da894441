"""Where a clip's media comes from: a local media root, http(s), fsspec URLs, or YouTube.

Every failure is a FetchError with an index status (not_found, timeout, too_large,
download_error) and a reason; nothing here raises anything else for a bad clip. Clip ids
never become paths outside the download dir: names are checked by ``safe_clip_id`` and the
temporary file is created with ``mkstemp`` inside this process's workspace of
``download_dir`` (pipeline/workspace.py: a killed worker's leftovers are removed by the next
run). A uri with a scheme (``data:``, ``lavfi:``, ``s3://``...) must have an allowed one; a
local file must be a regular file. Downloads have a hard deadline (``download_deadline``).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from pipeline.deadline import Deadline
from pipeline.hosts import SlotTimeout, host_of, limiter_for
from pipeline.manifest import ClipSpec, format_seconds, safe_clip_id
from pipeline.workspace import workspace

ALLOWED_SCHEMES = ("http", "https", "file", "s3", "gs", "gcs", "az", "abfs", "hf")
# Local media-root names tried in order; those with {start} are pre-cut segments.
# "Y{ytid}_{start3}_{end3}" is the naming of the common AudioSet download scripts.
DEFAULT_PATTERNS = ("{clip_id}", "{ytid}_{start}", "{ytid}_{start3}", "{ytid}_{start_ms}",
                    "{ytid}_{start06}", "Y{ytid}_{start3}_{end3}", "{ytid}")
_CHUNK = 1 << 16
# "scheme:" at the start of a uri (RFC 3986); a one-letter one would be a Windows drive
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


class FetchError(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class SourceConfig:
    media_root: str | None = None
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    url_template: str | None = None          # e.g. https://host/{ytid}_{start}.mp4
    youtube: bool = False
    youtube_url_template: str = "https://www.youtube.com/watch?v={ytid}"
    download_dir: str | None = None
    timeout: float = 30.0                    # seconds per connect / read
    deadline: float | None = None            # whole download, all tries (None: 10 x timeout)
    cross_host_redirects: bool = False       # http(s) redirects may leave the first host
    max_bytes: int = 512 * 1024 * 1024
    retries: int = 3
    backoff: float = 0.5                     # seconds, doubled per retry
    downloads_in_flight: int = 16            # clips fetched ahead of the decoder (0: none)
    max_per_host: int = 16                   # requests at once per host, all downloads (0: any)
    host_rate: float | None = None           # request starts per second per host (None: any)
    max_retry_after: float = 60.0            # longest Retry-After honoured, seconds
    allowed_schemes: tuple[str, ...] = ALLOWED_SCHEMES
    ffmpeg: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Fetched:
    path: str          # local file to decode
    uri: str           # what was actually read (for the index)
    precut: bool       # the file already starts at the clip's start
    temporary: bool    # delete after decoding
    folder: str | None = None  # a per-clip temporary folder to remove with it

    def cleanup(self) -> None:
        if self.temporary:
            try:
                os.unlink(self.path)
                if self.folder:
                    os.rmdir(self.folder)
            except OSError:
                pass


def _names(spec: ClipSpec) -> dict[str, str]:
    return {"clip_id": spec.clip_id, "ytid": spec.source_id, "source_id": spec.source_id,
            "start": format_seconds(spec.start), "end": format_seconds(spec.end),
            "start_ms": str(int(round(spec.start * 1000))),
            "start06": f"{int(spec.start):06d}", "start3": f"{spec.start:.3f}",
            "end3": f"{spec.end:.3f}"}


@lru_cache(maxsize=4)
def _stems(root: str, mtime_ns: int) -> dict[str, str]:
    """Map file stem -> path for every file directly in ``root`` (any extension); cached
    per folder modification time, so files added later are seen."""
    out: dict[str, str] = {}
    with os.scandir(root) as it:
        for entry in sorted(it, key=lambda e: e.name):
            if entry.is_file() and not entry.name.startswith("."):
                out.setdefault(entry.name.rsplit(".", 1)[0], entry.path)
    return out


def find_local(spec: ClipSpec, cfg: SourceConfig) -> Fetched:
    root = os.path.realpath(cfg.media_root or ".")
    names = _names(spec)
    try:
        stems = _stems(root, os.stat(root).st_mtime_ns)
    except OSError as err:
        raise FetchError("not_found", f"media root {cfg.media_root} unreadable: {err}") from err
    for pattern in cfg.patterns:
        stem = pattern.format(**names)
        path = stems.get(stem)
        if path and os.path.realpath(path).startswith(root + os.sep):
            return Fetched(path, Path(path).as_uri(), "{start" in pattern, False)
    raise FetchError("not_found", f"no file for {spec.clip_id} in {cfg.media_root}")


def download_deadline(cfg: SourceConfig) -> float:
    """Seconds one clip's download may take in all, every try and backoff included."""
    return cfg.deadline if cfg.deadline is not None else 10.0 * cfg.timeout


def _tempfile(cfg: SourceConfig, clip_id: str, suffix: str) -> str:
    if not safe_clip_id(clip_id):
        raise FetchError("download_error", f"unsafe clip id {clip_id!r}")
    ddir = workspace(cfg.download_dir)
    suffix = suffix if suffix.replace(".", "").isalnum() and len(suffix) <= 8 else ".bin"
    fd, path = tempfile.mkstemp(prefix=clip_id + ".", suffix=suffix, dir=ddir)
    os.close(fd)
    if os.path.dirname(os.path.realpath(path)) != ddir:
        os.unlink(path)
        raise FetchError("download_error", "download path escapes the download dir")
    return path


T = TypeVar("T")


class Retryable(FetchError):
    """A failure worth another try (timeouts, 5xx, refused connections). ``throttled``: the
    host asked us to slow down (HTTP 429 / 503, "Too Many Requests"), ``retry_after``
    seconds if it said how long."""

    def __init__(self, status: str, reason: str, throttled: bool = False,
                 retry_after: float | None = None):
        super().__init__(status, reason)
        self.throttled = throttled
        self.retry_after = retry_after


def with_retries(fn: Callable[[], T], cfg: SourceConfig, deadline: Deadline,
                 host: str | None = None) -> T:
    """Call ``fn``; retry Retryable failures with exponential backoff within ``deadline``.

    With ``host`` (pipeline/hosts.py ``host_of``) every try first takes a turn on that host
    (``max_per_host``, ``host_rate``); a throttled failure waits at least its Retry-After
    (at most ``max_retry_after``) and pauses the host for every download of the process."""
    limiter = limiter_for(cfg.max_per_host, cfg.host_rate) if host else None
    delay = cfg.backoff
    for attempt in range(cfg.retries + 1):
        try:
            if limiter is None or host is None:
                return fn()
            with limiter.slot(host, deadline):
                return fn()
        except SlotTimeout as err:
            tried = f" (after {attempt} tries)" if attempt else ""
            raise FetchError("timeout", f"{err}{tried}") from err
        except Retryable as err:
            wait = delay
            if err.throttled:
                wait = max(delay, min(err.retry_after or 0.0, cfg.max_retry_after))
            if attempt == cfg.retries or deadline.remaining() <= wait:
                late = (f"; waiting {wait:g} s more would pass the {deadline.seconds:g}-s "
                        "deadline") if attempt < cfg.retries else ""
                raise FetchError(err.status, f"{err.reason} (after {attempt + 1} tries"
                                 f"{late})") from err
            if err.throttled and limiter is not None and host is not None:
                limiter.pause(host, wait)
            time.sleep(wait)
            delay *= 2
    raise AssertionError("unreachable")


def copy_bounded(chunks: Iterable[bytes], dest: str, cfg: SourceConfig,
                 deadline: Deadline) -> None:
    """Write ``chunks`` to ``dest``: ``too_large`` past ``max_bytes``, ``timeout`` once
    ``deadline`` has passed (checked after every chunk; a chunk that never completes is
    cut by the caller's watchdog)."""
    total = 0
    with open(dest, "wb") as out:
        for chunk in chunks:
            total += len(chunk)
            if total > cfg.max_bytes:
                raise FetchError("too_large", f"body over limit {cfg.max_bytes}")
            if deadline.expired():
                raise FetchError("timeout", f"download exceeded its {deadline.seconds:g}-s "
                                 "deadline")
            out.write(chunk)


def fetch_fsspec(url: str, dest: str, cfg: SourceConfig) -> None:
    """An fsspec URL; the deadline is checked between reads (each read is bounded by the
    filesystem's own timeouts)."""
    import fsspec

    deadline = Deadline(download_deadline(cfg))

    def once() -> None:
        try:
            fs, path = fsspec.core.url_to_fs(url)
            size = fs.size(path)
            if size is not None and size > cfg.max_bytes:
                raise FetchError("too_large", f"{size} bytes > limit {cfg.max_bytes}")
            with fs.open(path, "rb") as src:
                copy_bounded(iter(lambda: src.read(_CHUNK), b""), dest, cfg, deadline)
        except FileNotFoundError as err:
            raise FetchError("not_found", f"{url} does not exist") from err
        except (TimeoutError, ConnectionError) as err:
            raise Retryable("timeout" if isinstance(err, TimeoutError) else "download_error",
                            str(err)) from err
        except (OSError, ValueError, ImportError) as err:
            raise FetchError("download_error", f"{type(err).__name__}: {err}") from err

    with_retries(once, cfg, deadline, host_of(url))


def uri_scheme(uri: str) -> str | None:
    """The scheme of ``uri`` (``data:x`` -> ``data``), or None for a plain path."""
    m = _SCHEME.match(uri)
    return m[1].lower() if m else None


def check_scheme(url: str, cfg: SourceConfig) -> str:
    scheme = uri_scheme(url) or ""
    if scheme not in cfg.allowed_schemes:
        raise FetchError("download_error", f"URL scheme {scheme!r} not allowed")
    return scheme


def local_file(path: str) -> str:
    """``path`` if it is a regular file (symlinks followed): ``not_found`` when it does
    not exist, ``download_error`` for a device, FIFO, socket or folder."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise FetchError("not_found", f"{path} does not exist") from err
    except OSError as err:
        raise FetchError("not_found", f"{path} unreadable: {err.strerror}") from err
    if not stat.S_ISREG(st.st_mode):
        raise FetchError("download_error", f"{path} is not a regular file (refused)")
    return path


def download(url: str, spec: ClipSpec, cfg: SourceConfig) -> Fetched:
    scheme = check_scheme(url, cfg)
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise FetchError("download_error", f"file URL on another host refused: {url}")
        path = local_file(unquote(parts.path))
        return Fetched(path, url, False, False)
    suffix = os.path.splitext(urlsplit(url).path)[1][:8] or ".bin"
    dest = _tempfile(cfg, spec.clip_id, suffix)
    try:
        if scheme in ("http", "https"):
            from pipeline.http_fetch import fetch_http

            url = fetch_http(url, dest, cfg)
        else:
            fetch_fsspec(url, dest, cfg)
    except BaseException:
        os.unlink(dest)
        raise
    return Fetched(dest, url, False, True)


def fetch(spec: ClipSpec, cfg: SourceConfig) -> Fetched:
    """Resolve and, if needed, download ``spec``'s media. Raises FetchError only."""
    uri = spec.uri
    if uri.startswith("youtube:"):
        if cfg.media_root:
            return find_local(spec, cfg)
        if cfg.url_template:
            url = cfg.url_template.format(**_names(spec))
            fetched = download(url, spec, cfg)
            fetched.precut = "{start" in cfg.url_template
            return fetched
        if cfg.youtube:
            from pipeline.youtube import fetch_youtube

            return fetch_youtube(spec, cfg)
        raise FetchError("download_error", "no source configured for youtube ids "
                         "(use --media-root, --url-template or --source youtube)")
    if uri_scheme(uri) is not None:  # data:, javascript:, lavfi:, concat: -> not allowed
        return download(uri, spec, cfg)
    path = local_file(uri)
    return Fetched(path, Path(os.path.abspath(path)).as_uri(), False, False)
