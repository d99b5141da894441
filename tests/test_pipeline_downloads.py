"""Downloads against a real HTTP server on 127.0.0.1: ok, 404, stalled (timeout),
oversized (with and without Content-Length), not media, a flaky 500 that a retry fixes,
a disallowed scheme, and yt-dlp's generic extractor downloading only the segment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.manifest import ClipSpec
from pipeline.media_server import MediaHandler, MediaServer
from pipeline.probe import probe
from pipeline.shard_task import ShardJob, process_shard
from pipeline.sources import FetchError, SourceConfig, fetch
from store import StoreSpec, create_store, open_store

STALL_S = 3.0


class _Handler(MediaHandler):
    """The media server's answers plus a stall, oversized bodies, HTML, a flaky 500."""

    def route(self, path: str) -> None:
        srv, media = self.server.owner, self.server.owner.fallback or b""
        if path == "/stall.mp4":
            time.sleep(STALL_S)
            self.send_body(media)
        elif path == "/big.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 1024 * 1024))
            self.end_headers()
        elif path == "/big_nolength.mp4":
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 65536)
        elif path == "/notmedia.mp4":
            self.send_body(b"<html><body>not a video</body></html>\n" * 50, "text/html")
        elif path == "/flaky.mp4" and srv.hits[path] == 1:
            self.send_error(500)
        elif path == "/flaky.mp4":
            self.send_body(media)
        else:
            super().route(path)


@pytest.fixture(scope="module")
def http_server(media_dir: Path):
    with MediaServer(fallback=(media_dir / "earth.mp4").read_bytes(), handler=_Handler) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(http_server: MediaServer) -> str:
    return http_server.url


def _downloads_left(folder: Path) -> list[Path]:
    """Files under the download dir other than the live workspaces' lock files."""
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"]


def _cfg(tmp_path: Path, **kw) -> SourceConfig:
    base = dict(download_dir=str(tmp_path / "dl"), timeout=0.5, retries=1, backoff=0.05,
                max_bytes=2 * 1024 * 1024)
    base.update(kw)
    return SourceConfig(**base)


def test_http_outcomes_become_index_rows(server: str, http_server: MediaServer,
                                         tmp_path: Path) -> None:
    names = ["ok", "missing", "stall", "big", "big_nolength", "notmedia", "flaky", "ftp"]
    urls = {n: f"{server}/{n}.mp4" for n in names}
    urls["ok"] = f"{server}/media/earth.mp4"
    urls["ftp"] = "ftp://127.0.0.1/x.mp4"
    clips = [ClipSpec(n, n, 0.0, 4.0, urls[n], [0], "train") for n in names]
    root = tmp_path / "store"
    create_store(str(root), StoreSpec(), None)
    t0 = time.time()
    process_shard(ShardJob(str(root), 0, clips, _cfg(tmp_path)))
    assert time.time() - t0 < 4 * STALL_S  # the stall was cut by the timeout
    rows = {r["clip_id"]: r for r in open_store(str(root)).index().to_pylist()}
    assert {n: rows[n]["status"] for n in names} == {
        "ok": "ok", "missing": "not_found", "stall": "timeout", "big": "too_large",
        "big_nolength": "too_large", "notmedia": "bad_media", "flaky": "ok",
        "ftp": "download_error"}
    assert rows["ok"]["video_frames"] == 8 and rows["ok"]["has_audio"]
    assert "after 2 tries" in rows["stall"]["error"]
    assert "not allowed" in rows["ftp"]["error"]
    assert http_server.hits["/flaky.mp4"] == 2
    assert _downloads_left(tmp_path / "dl") == []  # temporary downloads removed


def test_unsafe_clip_id_never_becomes_a_path(server: str, tmp_path: Path) -> None:
    spec = ClipSpec("../../escape", "x", 0, 4, f"{server}/media/earth.mp4", [0])
    with pytest.raises(FetchError) as err:
        fetch(spec, _cfg(tmp_path))
    assert err.value.status == "download_error"
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


def test_youtube_source_downloads_only_the_segment(server: str, tmp_path: Path) -> None:
    pytest.importorskip("yt_dlp")
    cfg = _cfg(tmp_path, youtube=True, timeout=10.0,
               youtube_url_template=server + "/media/{ytid}.mp4")
    spec = ClipSpec("abcdefghijk_12", "abcdefghijk", 12.0, 16.0, "youtube:abcdefghijk", [0])
    got = fetch(spec, cfg)
    try:
        assert got.precut and got.temporary
        info = probe(got.path)
        assert info.has_audio and info.has_video
        assert 3.5 < info.duration < 6.0  # the 4-s range, not the 30.5-s file
    finally:
        got.cleanup()
    assert _downloads_left(tmp_path / "dl") == []
    missing = ClipSpec("abcdefghijx_0", "abcdefghijx", 0, 4, "youtube:abcdefghijx", [0])
    cfg404 = _cfg(tmp_path, youtube=True, youtube_url_template=server + "/nope/{ytid}.mp4")
    with pytest.raises(FetchError) as err:
        fetch(missing, cfg404)
    assert err.value.status == "not_found"


def test_url_template_downloads_per_clip(server: str, http_server: MediaServer,
                                         tmp_path: Path) -> None:
    spec = ClipSpec("abcdefghijk_30", "abcdefghijk", 30.0, 40.0, "youtube:abcdefghijk", [0])
    precut = fetch(spec, _cfg(tmp_path, url_template=server + "/media/{ytid}_{start}.mp4"))
    whole = fetch(spec, _cfg(tmp_path, url_template=server + "/media/{ytid}.mp4"))
    try:
        assert precut.uri == f"{server}/media/abcdefghijk_30.mp4"
        assert (precut.precut, whole.precut) == (True, False)  # a {start} URL is a segment
        body = http_server.fallback
        assert Path(precut.path).read_bytes() == Path(whole.path).read_bytes() == body
    finally:
        precut.cleanup()
        whole.cleanup()
    assert _downloads_left(tmp_path / "dl") == []


def test_youtube_format_is_at_most_360p() -> None:
    """yt-dlp's own selector on a YouTube-like format list: best video <= 360p + best audio,
    else (nothing that small) the smallest video. Formats come worst-first, as yt-dlp sorts
    them before selecting."""
    yt_dlp = pytest.importorskip("yt_dlp")
    from pipeline.youtube import FORMAT

    def formats(heights: list[int]) -> list[dict]:
        video = [{"format_id": f"v{h}", "height": h, "width": h * 16 // 9, "vcodec": "avc1",
                  "acodec": "none", "ext": "mp4", "url": f"https://x/v{h}", "tbr": h}
                 for h in heights]
        return video + [{"format_id": "a", "vcodec": "none", "acodec": "mp4a", "ext": "m4a",
                         "url": "https://x/a", "tbr": 128}]

    with yt_dlp.YoutubeDL({"quiet": True}) as ydl:
        select = ydl.build_format_selector(FORMAT)
        for heights, want in [([144, 240, 360, 480, 720, 1080], "v360+a"),
                              ([480, 720, 1080], "v480+a")]:
            got = list(select({"formats": formats(heights), "incomplete_formats": False}))
            assert [g["format_id"] for g in got] == [want]


def test_fsspec_urls_with_limits(media_dir: Path, tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/clips/earth.mp4", (media_dir / "earth.mp4").read_bytes())
    cfg = _cfg(tmp_path, allowed_schemes=("memory",), max_bytes=4 * 1024 * 1024)
    ok = fetch(ClipSpec("m1", "m1", 0, 4, "memory://clips/earth.mp4", [0]), cfg)
    try:
        assert Path(ok.path).read_bytes() == (media_dir / "earth.mp4").read_bytes()
    finally:
        ok.cleanup()
    small = _cfg(tmp_path, allowed_schemes=("memory",), max_bytes=1000)
    for uri, status in [("memory://clips/earth.mp4", "too_large"),
                        ("memory://clips/nope.mp4", "not_found")]:
        with pytest.raises(FetchError) as err:
            fetch(ClipSpec("m2", "m2", 0, 4, uri, [0]), small)
        assert err.value.status == status
    with pytest.raises(FetchError) as err:  # not in the default allowed schemes
        fetch(ClipSpec("m3", "m3", 0, 4, "memory://clips/earth.mp4", [0]), _cfg(tmp_path))
    assert err.value.status == "download_error"
    assert _downloads_left(tmp_path / "dl") == []


def test_media_root_patterns_and_precut(tmp_path: Path) -> None:
    from pipeline.sources import find_local

    root = tmp_path / "root"
    root.mkdir()
    for name in ("Yabcdefghijk_30.000_40.000.wav", "bcdefghijkl.mkv", "cdefghijklm_5.mp4"):
        (root / name).write_bytes(b"x")
    (tmp_path / "outside.mp4").write_bytes(b"x")
    cfg = SourceConfig(media_root=str(root))
    spec = lambda y, s: ClipSpec(f"{y}_{s}", y, s, s + 10, f"youtube:{y}", [0])  # noqa: E731
    a = find_local(spec("abcdefghijk", 30.0), cfg)
    b = find_local(spec("bcdefghijkl", 30.0), cfg)
    c = find_local(spec("cdefghijklm", 5.0), cfg)
    assert (Path(a.path).name, a.precut) == ("Yabcdefghijk_30.000_40.000.wav", True)
    assert (Path(b.path).name, b.precut) == ("bcdefghijkl.mkv", False)
    assert (Path(c.path).name, c.precut) == ("cdefghijklm_5.mp4", True)
    with pytest.raises(FetchError) as err:
        find_local(ClipSpec("x", "../outside", 0, 10, "youtube:../outside", [0]),
                   SourceConfig(media_root=str(root), patterns=("{ytid}",)))
    assert err.value.status == "not_found"
