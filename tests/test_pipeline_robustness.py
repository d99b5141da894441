"""Hostile downloads and uris (issue 8, items 5, 9, 10, 12) against a real HTTP server on
127.0.0.1: a body or header trickling one byte per 0.5 s is cut at the download deadline
(http and yt-dlp), a killed worker's temporary download is removed by the next run,
redirects are checked hop by hop and the final URL is the index ``uri``, and uris with a
disallowed scheme or naming a device are refused with that reason.

Timing: the deadline tests assert an upper bound only (deadline + generous slack for a
loaded 2-core box); the trickle would otherwise hold the worker for minutes.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.generic_manifest import read_generic
from pipeline.manifest import ClipSpec, ManifestBuilder, vocabulary_table
from pipeline.shard_task import ShardJob, process_shard
from pipeline.sources import FetchError, SourceConfig, fetch
from pipeline.workspace import PREFIX, sweep
from store import StoreSpec, create_store, open_store

REPO = Path(__file__).resolve().parents[1]
TRICKLE_S = 0.5     # one byte every half second
SLACK_S = 4.0       # a loaded CI box: start-up, scheduling


class _Handler(BaseHTTPRequestHandler):
    media: bytes = b""
    port: int = 0

    def log_message(self, *args: object) -> None:
        pass

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _trickle(self, data: bytes) -> None:
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(TRICKLE_S)
        except OSError:  # the client gave up: that is the point
            pass

    def do_GET(self) -> None:
        path = self.path
        if path.startswith("/media/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.media)))
            self.end_headers()
            self.wfile.write(self.media)
        elif path.startswith("/trickle_body"):
            self.send_response(200)
            self.send_header("Content-Length", "600")
            self.end_headers()
            self._trickle(b"\0" * 600)  # 300 s if nobody cuts it
        elif path.startswith("/trickle_head"):
            self._trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n" + b"X: y\r\n" * 100)
        elif path == "/hop/same":
            self._redirect("/hop/again")
        elif path == "/hop/again":
            self._redirect("/media/earth.mp4")
        elif path == "/hop/other":  # 127.0.0.1 -> localhost: another host name
            self._redirect(f"http://localhost:{self.port}/media/earth.mp4")
        elif path == "/hop/file":
            self._redirect("file:///etc/passwd")
        elif path == "/hop/loop":
            self._redirect("/hop/loop")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server(media_dir: Path):
    _Handler.media = (media_dir / "earth.mp4").read_bytes()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    _Handler.port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def _cfg(tmp_path: Path, **kw) -> SourceConfig:
    base = dict(download_dir=str(tmp_path / "dl"), timeout=2.0, retries=0, backoff=0.05)
    base.update(kw)
    return SourceConfig(**base)


def _left(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"]


@pytest.mark.parametrize("path", ["/trickle_body.mp4", "/trickle_head.mp4"])
def test_trickle_is_cut_at_the_deadline(server: str, tmp_path: Path, path: str) -> None:
    """Issue 8.5: 1 byte / 0.5 s, --timeout 2 --retries 0 held a worker 150 s; the whole
    download now ends at its deadline (here 3 s) as `timeout`."""
    spec = ClipSpec("slow", "slow", 0, 4, server + path, [0])
    t0 = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch(spec, _cfg(tmp_path, deadline=3.0))
    took = time.monotonic() - t0
    assert err.value.status == "timeout" and "3-s deadline" in err.value.reason
    assert took < 3.0 + SLACK_S, took
    assert _left(tmp_path / "dl") == []


def test_default_deadline_is_ten_timeouts_across_retries(server: str, tmp_path: Path) -> None:
    spec = ClipSpec("slow", "slow", 0, 4, server + "/trickle_body.mp4", [0])
    t0 = time.monotonic()
    with pytest.raises(FetchError) as err:
        # reads never time out (a byte every 0.5 s); the deadline is 6 s for all tries
        fetch(spec, _cfg(tmp_path, timeout=0.6, retries=3))
    assert err.value.status == "timeout" and "6-s deadline" in err.value.reason
    assert time.monotonic() - t0 < 6.0 + SLACK_S


def test_youtube_download_has_a_hard_deadline(server: str, tmp_path: Path) -> None:
    pytest.importorskip("yt_dlp")
    cfg = _cfg(tmp_path, youtube=True, deadline=6.0,
               youtube_url_template=server + "/trickle_body/{ytid}.mp4")
    spec = ClipSpec("abcdefghijk_0", "abcdefghijk", 0.0, 4.0, "youtube:abcdefghijk", [0])
    t0 = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch(spec, cfg)
    assert err.value.status == "timeout" and "6-s deadline" in err.value.reason
    # the deadline starts once the child has imported yt-dlp (seconds on a busy box)
    assert time.monotonic() - t0 < 6.0 + SLACK_S + 10.0
    assert _left(tmp_path / "dl") == []


_KILLED_WORKER = """
import sys
from pipeline.manifest import ClipSpec
from pipeline.sources import SourceConfig, fetch
fetch(ClipSpec("victim", "victim", 0, 4, sys.argv[1], [0]),
      SourceConfig(download_dir=sys.argv[2], timeout=60, retries=0))
"""


def test_killed_workers_download_is_removed_by_the_next_run(server: str,
                                                            tmp_path: Path) -> None:
    """Issue 8.9: a worker SIGKILLed mid-download leaves its temporary file; the next
    run's first download (or shard) removes it, and never a live process's."""
    dl = tmp_path / "dl"
    first = _start_download(server, dl)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert len(_victims(dl)) == 1  # the killed worker's temporary download stays...
    # ... until the next run: a new worker's first download sweeps before downloading
    live = _start_download(server, dl)
    try:
        assert len(_victims(dl)) == 1  # only the live worker's own file now
        assert len(_workspaces(dl)) == 1
        root = tmp_path / "store"  # and a shard task sweeps too, sparing live workers
        create_store(str(root), StoreSpec(), None)
        clip = ClipSpec("fresh", "fresh", 0, 2, server + "/media/earth.mp4", [0])
        process_shard(ShardJob(str(root), 0, [clip], _cfg(tmp_path)))
        assert len(_victims(dl)) == 1 and len(_workspaces(dl)) == 2
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    assert sweep(str(dl)) == 1  # now the live one is dead too
    assert _left(dl) == [] and len(_workspaces(dl)) == 1  # ours (this process) is left
    assert open_store(str(root)).index().to_pylist()[0]["status"] == "ok"


def _victims(dl: Path) -> list[Path]:
    return [p for p in _left(dl) if p.name.startswith("victim.")]


def _workspaces(dl: Path) -> list[Path]:
    return [p for p in dl.iterdir() if p.name.startswith(PREFIX)]


def _start_download(server: str, dl: Path) -> subprocess.Popen:
    """A worker process downloading a trickle; returns once its temporary file exists."""
    before = set(_victims(dl)) if dl.exists() else set()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WORKER,
                             server + "/trickle_body.mp4", str(dl)], cwd=REPO)
    deadline = time.monotonic() + 60
    while not set(_victims(dl) if dl.exists() else []) - before:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the downloader exited or made no temporary file within 60 s")
        time.sleep(0.05)
    return proc


def test_redirects_checked_per_hop_and_final_url_recorded(server: str,
                                                          tmp_path: Path) -> None:
    """Issue 8.10: each hop's scheme is checked, a cross-host hop needs the option, and
    the index `uri` is the URL the bytes came from."""
    port = server.rsplit(":", 1)[1]
    clips = [ClipSpec(n, n, 0, 2, server + f"/hop/{n}", [0])
             for n in ("same", "other", "file", "loop")]
    results = {}
    for allow in (False, True):
        root = tmp_path / f"store-{allow}"
        create_store(str(root), StoreSpec(), None)
        process_shard(ShardJob(str(root), 0, clips, _cfg(tmp_path, cross_host_redirects=allow)))
        results[allow] = {r["clip_id"]: r for r in open_store(str(root)).index().to_pylist()}
    strict, loose = results[False], results[True]
    assert strict["same"]["status"] == "ok"
    assert strict["same"]["uri"] == server + "/media/earth.mp4"
    assert strict["other"]["status"] == "download_error"
    assert "cross-host redirect 127.0.0.1 -> localhost refused" in strict["other"]["error"]
    assert loose["other"]["status"] == "ok"
    assert loose["other"]["uri"] == f"http://localhost:{port}/media/earth.mp4"
    for r in (strict, loose):
        assert r["file"]["status"] == "download_error"
        assert "redirect to URL scheme 'file' not allowed" in r["file"]["error"]
        assert r["loop"]["status"] == "download_error"
        assert "more than 10 redirects" in r["loop"]["error"]
    assert _left(tmp_path / "dl") == []


def test_disallowed_schemes_and_devices_are_refused(tmp_path: Path) -> None:
    """Issue 8.12: data:, javascript:, lavfi:, concat: were `not_found ... does not
    exist`; a device was `not_found` although it exists."""
    rows = [("data", "data:video/mp4;base64,AAAA"), ("js", "javascript:alert(1)"),
            ("lavfi", "lavfi:testsrc"), ("concat", "concat:/a.mp4|/b.mp4"),
            ("zero", "file:///dev/zero"), ("zero_path", "/dev/zero"),
            ("folder", str(tmp_path)), ("nothing", str(tmp_path / "nothing.mp4"))]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end"])
        w.writerows([(cid, uri, 0, 2) for cid, uri in rows])
    builder = read_generic(manifest, vocabulary_table([]), ManifestBuilder())
    assert builder.rejects == []
    root = tmp_path / "store"
    create_store(str(root), StoreSpec(), None)
    process_shard(ShardJob(str(root), 0, builder.specs, _cfg(tmp_path)))
    got = {r["clip_id"]: (r["status"], r["error"])
           for r in open_store(str(root)).index().to_pylist()}
    for scheme in ("data", "javascript", "lavfi", "concat"):
        cid = "js" if scheme == "javascript" else scheme
        assert got[cid] == ("download_error", f"URL scheme {scheme!r} not allowed")
    for cid, path in [("zero", "/dev/zero"), ("zero_path", "/dev/zero"),
                      ("folder", str(tmp_path))]:
        assert got[cid] == ("download_error", f"{path} is not a regular file (refused)")
    assert got["nothing"][0] == "not_found"
    assert os.path.exists("/dev/zero")


def test_cli_flags_reach_the_source_config(tmp_path: Path) -> None:
    from pipeline.cli import _options, build_parser

    base = ["build", "--manifest", "m.csv", "--out", str(tmp_path / "s"), "--timeout", "2"]
    plain = _options(build_parser().parse_args(base)).source
    assert (plain.deadline, plain.cross_host_redirects) == (None, False)
    assert plain.timeout == 2.0
    args = build_parser().parse_args(base + ["--deadline", "7", "--allow-cross-host-redirects"])
    src = _options(args).source
    assert (src.deadline, src.cross_host_redirects) == (7.0, True)
