"""A real HTTP server on 127.0.0.1 serving media files, for ``pipeline bench --latency``
and the download tests: ``GET /media/<name>`` answers a file's bytes after ``latency``
seconds, counts the requests it is serving at once (``RequestCounter``, shareable between
servers to count several hosts), and can answer the first ``throttle`` requests (or all,
-1) with HTTP 429 and a Retry-After header. Names are looked up in a fixed table, never
joined to a path. Subclass ``MediaHandler`` and override ``route`` for other answers.
``serve_in_child`` (or ``python -m pipeline.media_server FILE...``) runs one in its own
process, as the benchmark does.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RequestCounter:
    """Requests in progress, per server and in all, with their peaks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.peak_total = 0
        self.total = 0

    def enter(self, key: str) -> None:
        with self._lock:
            self.now[key] = self.now.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.now[key])
            self.peak_total = max(self.peak_total, sum(self.now.values()))
            self.total += 1

    def exit(self, key: str) -> None:
        with self._lock:
            self.now[key] -= 1


class MediaHandler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # yt-dlp's generic extractor may probe with HEAD
        self.do_GET()

    def do_GET(self) -> None:
        srv = self.server.owner
        path = self.path.split("?")[0]
        srv.counter.enter(srv.url)
        try:
            with srv.lock:
                srv.hits[path] = srv.hits.get(path, 0) + 1
                srv.requests += 1
                throttled = srv.throttle < 0 or srv.requests <= srv.throttle
            if srv.latency:
                time.sleep(srv.latency)
            if throttled:
                self.send_response(429)
                self.send_header("Retry-After", f"{srv.retry_after:g}")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.route(path)
        finally:
            srv.counter.exit(srv.url)

    def route(self, path: str) -> None:
        body = self.server.owner.media(path.removeprefix("/media/")) \
            if path.startswith("/media/") else None
        if body is None:
            self.send_error(404)
        else:
            self.send_body(body)

    def send_body(self, body: bytes, ctype: str = "video/mp4", length: bool = True) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: MediaServer


class MediaServer:
    """``with MediaServer(files) as srv: srv.url + "/media/earth.mp4"``. ``files``: name ->
    bytes or path; ``fallback``: bytes served for any other ``/media/`` name."""

    def __init__(self, files: Mapping[str, bytes | str | Path] | None = None,
                 latency: float = 0.0, throttle: int = 0, retry_after: float = 1.0,
                 counter: RequestCounter | None = None, fallback: bytes | None = None,
                 handler: type[MediaHandler] = MediaHandler):
        self.files = {k: v if isinstance(v, bytes) else Path(v).read_bytes()
                      for k, v in (files or {}).items()}
        self.latency, self.throttle, self.retry_after = latency, throttle, retry_after
        self.fallback = fallback
        self.counter = counter or RequestCounter()
        self.hits: dict[str, int] = {}
        self.requests = 0
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def media(self, name: str) -> bytes | None:
        return self.files.get(name, self.fallback)

    def __enter__(self) -> MediaServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def serve_in_child(files: list[Path], latency: float = 0.0) -> Iterator[str]:
    """A MediaServer for ``files`` (by name) in a child process, so that serving does not
    share the caller's CPU and GIL the way a remote host would not; yields its URL. The
    child exits when the block ends or its parent dies (stdin closes)."""
    args = [sys.executable, "-m", "pipeline.media_server", "--latency", str(latency),
            *map(str, files)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        try:
            line = proc.stdout.readline().decode().strip()  # type: ignore[union-attr]
            if not line.startswith("http://"):
                raise RuntimeError("the media server did not start")
            yield line
        finally:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description="serve media files on 127.0.0.1")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    with MediaServer({p.name: p for p in args.files}, latency=args.latency) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()  # until the parent closes it (or dies)


if __name__ == "__main__":
    main()
