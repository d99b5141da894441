"""Downloads ahead of the decoder (pipeline/prefetch.py) and per-host limits with backoff
(pipeline/hosts.py) against real 127.0.0.1 servers (pipeline/media_server.py): downloads
in flight are bounded in all and per host, the shard keeps manifest order whichever
download ends first, a 429 host gets backoff (Retry-After honoured) and a host that never
stops answering 429 fails the clip with a clear reason inside the deadline (yt-dlp's
"Too Many Requests" too), the store is byte-identical with prefetch on and off, the same
failure records and --retry-failed result, and no temporary file outlives a task --
finished, stopped early, or SIGKILLed with downloads in flight.

Timing: only lower bounds that sleeps guarantee (Retry-After waits) and deadline upper
bounds with slack; concurrency is asserted as peaks counted by the server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from pipeline_fixtures import SAMPLES, SHARD, index_rows, write_manifest

from pipeline.generic_manifest import generic_vocabulary, read_generic
from pipeline.http_fetch import retry_after
from pipeline.manifest import ClipSpec, ManifestBuilder, shard_plan
from pipeline.media_server import MediaHandler, MediaServer, RequestCounter
from pipeline.prefetch import prefetched
from pipeline.shard_task import CRASH_ENV, ShardJob, process_shard
from pipeline.sources import Fetched, FetchError, SourceConfig, fetch
from store import StoreSpec, create_store, open_store, open_writer

REPO = Path(__file__).resolve().parents[1]
SLACK_S = 4.0  # a loaded CI box


class _SlowFirst(MediaHandler):
    """``/media/slow-*`` answers 1 s late: a later clip's download ends first."""

    def route(self, path: str) -> None:
        if path.startswith("/media/slow-"):
            time.sleep(1.0)
        super().route(path)


def _cfg(tmp_path: Path, **kw) -> SourceConfig:
    base = dict(download_dir=str(tmp_path / "dl"), timeout=5.0, retries=3, backoff=0.05)
    base.update(kw)
    return SourceConfig(**base)


def _left(tmp_path: Path) -> list[Path]:
    """Files under the download dir other than the live workspaces' lock files."""
    folder = tmp_path / "dl"
    return [p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"]


def _rows(root: Path) -> list[dict]:
    return sorted(open_store(str(root)).index().to_pylist(), key=lambda r: r["row"])


_TOKEN = re.compile(rb"(\d{6})-[0-9a-f]{12}")  # the writer's random shard-file token


def _tree(root: Path) -> dict[str, object]:
    """Every file of the store, by path, with the random token of each shard file's name
    (made fresh per write, so a rewrite never collides) replaced; index parts (and their
    copies inside the shard files) as their rows and metadata with the same replacement,
    every other file as its bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        name = _TOKEN.sub(rb"\1-T", str(p.relative_to(root)).encode()).decode()
        data = p.read_bytes()
        if data.startswith(b"PAR1"):
            table = pq.read_table(pa.BufferReader(data))
            meta = {k: _TOKEN.sub(rb"\1-T", v) for k, v in table.schema.metadata.items()}
            rows = _TOKEN.sub(rb"\1-T", json.dumps(table.to_pylist()).encode())
            out[name] = (rows, meta)
        else:
            out[name] = data
    return out


def _earth(name: str, url: str, end: float = 1.0) -> ClipSpec:
    return ClipSpec(name, name, 0.0, end, url, [0], "train")


def test_downloads_in_flight_are_bounded_in_all_and_per_host(tmp_path: Path) -> None:
    counter = RequestCounter()
    earth = (SAMPLES / "earth.mp4").read_bytes()
    with MediaServer(fallback=earth, latency=0.3, counter=counter, handler=_SlowFirst) as a, \
            MediaServer(fallback=earth, latency=0.3, counter=counter) as b:
        clips = [_earth("slow-0", f"{a.url}/media/slow-0.mp4")]
        clips += [_earth(f"c{i}", f"{(a, b)[i % 2].url}/media/c{i}.mp4") for i in range(1, 12)]
        for depth, per_host in [(3, 4), (6, 2)]:
            root = tmp_path / f"store-{depth}-{per_host}"
            create_store(str(root), StoreSpec(), None)
            counter.peak, counter.peak_total = {}, 0
            cfg = _cfg(tmp_path, downloads_in_flight=depth, max_per_host=per_host)
            process_shard(ShardJob(str(root), 0, clips, cfg))
            rows = _rows(root)
            assert [r["clip_id"] for r in rows] == [c.clip_id for c in clips]  # manifest order
            assert {r["status"] for r in rows} == {"ok"}
            assert 2 <= counter.peak_total <= min(depth, 2 * per_host)
            assert max(counter.peak.values()) <= per_host
        assert counter.peak_total == 4 and counter.peak == {a.url: 2, b.url: 2}
    assert _left(tmp_path) == []


def test_a_throttled_host_gets_backoff_and_the_clip_then_succeeds(tmp_path: Path) -> None:
    with MediaServer({"earth.mp4": SAMPLES / "earth.mp4"}, throttle=2, retry_after=1) as srv:
        root = tmp_path / "store"
        create_store(str(root), StoreSpec(), None)
        t0 = time.monotonic()
        process_shard(ShardJob(str(root), 0, [_earth("e", f"{srv.url}/media/earth.mp4")],
                               _cfg(tmp_path, deadline=30.0)))
        waited = time.monotonic() - t0
        assert srv.requests == 3  # 429, 429, 200
    assert waited >= 2.0  # two Retry-After: 1 waits (the backoff alone is 0.05 + 0.1 s)
    assert _rows(root)[0]["status"] == "ok"
    assert _left(tmp_path) == []


def test_a_host_that_always_says_429_fails_within_the_deadline(tmp_path: Path) -> None:
    with MediaServer(throttle=-1, retry_after=1) as srv:
        url = f"{srv.url}/media/earth.mp4"
        t0 = time.monotonic()
        with pytest.raises(FetchError) as err:
            fetch(_earth("e", url), _cfg(tmp_path, retries=2, deadline=10.0))
        assert time.monotonic() - t0 < 10.0 + SLACK_S
        assert err.value.status == "download_error"
        assert err.value.reason == f"HTTP 429 for {url} (Retry-After 1 s) (after 3 tries)"
        srv.retry_after = 30  # longer than the deadline: no point waiting for it
        t0 = time.monotonic()
        with pytest.raises(FetchError) as err:
            fetch(_earth("e", url), _cfg(tmp_path, deadline=3.0))
        assert time.monotonic() - t0 < 3.0 + SLACK_S  # refused at once, not 30 s later
        assert err.value.reason == (f"HTTP 429 for {url} (Retry-After 30 s) (after 1 tries; "
                                    "waiting 30 s more would pass the 3-s deadline)")
    assert _left(tmp_path) == []


def test_yt_dlp_too_many_requests_is_retried_then_fails(tmp_path: Path) -> None:
    pytest.importorskip("yt_dlp")
    with MediaServer(throttle=-1, retry_after=0) as srv:
        cfg = _cfg(tmp_path, youtube=True, retries=1, timeout=10.0,
                   youtube_url_template=srv.url + "/media/{ytid}.mp4")
        spec = ClipSpec("abcdefghijk_0", "abcdefghijk", 0, 2, "youtube:abcdefghijk", [0])
        with pytest.raises(FetchError) as err:
            fetch(spec, cfg)
        tries = srv.requests
    assert err.value.status == "download_error"
    assert "HTTP Error 429" in err.value.reason and "(after 2 tries)" in err.value.reason
    assert tries >= 2
    assert _left(tmp_path) == []


def test_host_rate_spaces_request_starts(tmp_path: Path) -> None:
    """4 request starts per second: 5 downloads from one host take at least 1 s, however
    many are allowed at once."""
    with MediaServer(fallback=(SAMPLES / "house_lo.ogg").read_bytes()) as srv:
        clips = [_earth(f"c{i}", f"{srv.url}/media/c{i}.ogg") for i in range(5)]
        cfg = _cfg(tmp_path, downloads_in_flight=4, max_per_host=4, host_rate=4.0)
        t0 = time.monotonic()
        with closing(prefetched(clips, cfg)) as it:
            for _, got in it:
                assert isinstance(got, Fetched)
                got.cleanup()
        assert time.monotonic() - t0 >= 1.0 and srv.requests == 5
    assert _left(tmp_path) == []


def test_a_busy_or_paused_host_makes_a_download_wait_never_past_its_deadline() -> None:
    from pipeline.deadline import Deadline
    from pipeline.hosts import HostLimiter, SlotTimeout

    limiter = HostLimiter(max_per_host=1)
    with limiter.slot("h:1", Deadline(5)):
        t0 = time.monotonic()
        with pytest.raises(SlotTimeout, match="no turn on host h:1"), \
                limiter.slot("h:1", Deadline(0.3)):
            pass
        assert 0.3 <= time.monotonic() - t0 < 0.3 + SLACK_S
        with limiter.slot("other:1", Deadline(0.3)):  # another host is not held up
            assert limiter.active("h:1") == limiter.active("other:1") == 1
    limiter.pause("h:1", 0.4)
    t0 = time.monotonic()
    with limiter.slot("h:1", Deadline(5)):
        assert time.monotonic() - t0 >= 0.4


def test_retry_after_header_forms() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after("7") == 7.0
    assert 25 < retry_after(soon) <= 30  # type: ignore[operator]
    assert retry_after(None) is retry_after("soon") is retry_after("-1") is None


def _http_manifest(tmp_path: Path, url: str) -> list[ClipSpec]:
    """The fixtures' 8 clips (one missing) with their media over http."""
    local = write_manifest(tmp_path / "local.csv", SAMPLES)
    text = local.read_text().replace(str(SAMPLES), url + "/media")
    manifest = tmp_path / "http.csv"
    manifest.write_text(text)
    return read_generic(manifest, generic_vocabulary(local), ManifestBuilder()).specs


def _build(root: Path, specs: list[ClipSpec], cfg: SourceConfig, **kw) -> None:
    create_store(str(root), StoreSpec(shard_size=SHARD), None)
    for sid, clips in enumerate(shard_plan(specs, SHARD)):
        process_shard(ShardJob(str(root), sid, clips, cfg, **kw))


def test_store_is_byte_identical_with_prefetch_on_and_off(tmp_path: Path) -> None:
    files = {p.name: p for p in SAMPLES.iterdir() if p.suffix != ".md"}
    with MediaServer(files, latency=0.05) as srv:
        specs = _http_manifest(tmp_path, srv.url)
        for depth in (0, 4):
            _build(tmp_path / f"s{depth}", specs, _cfg(tmp_path, downloads_in_flight=depth))
    off, on = _tree(tmp_path / "s0"), _tree(tmp_path / "s4")
    assert len(off) > 8 and off == on
    rows = {r["clip_id"]: r for r in _rows(tmp_path / "s4")}
    assert {c: r["status"] for c, r in rows.items() if r["status"] != "ok"} == {
        "gone": "not_found"}
    assert rows["gone"]["error"] == f"HTTP 404 for {srv.url}/media/missing.mp4"
    assert _left(tmp_path) == []


def test_failure_records_and_retry_failed_unchanged_with_prefetch(tmp_path: Path) -> None:
    """A host answering 429 fails its clips; once it answers, --retry-failed re-fetches
    only them and the store equals a build that never failed."""
    files = {p.name: p for p in SAMPLES.iterdir() if p.suffix != ".md"}
    with MediaServer(files) as good, MediaServer(files, throttle=-1, retry_after=0) as busy:
        specs = _http_manifest(tmp_path, good.url)
        for spec in specs:
            if spec.clip_id.startswith("earth"):
                spec.uri = spec.uri.replace(good.url, busy.url)
        cfg = _cfg(tmp_path, retries=1, downloads_in_flight=3)
        _build(tmp_path / "retried", specs, cfg)
        failed = {r["clip_id"]: r["error"] for r in _rows(tmp_path / "retried")
                  if r["status"] == "download_error"}
        assert set(failed) == {"earth_0", "earth_10"}
        assert all("HTTP 429" in e and "(after 2 tries)" in e for e in failed.values())
        busy.throttle = 0
        _build(tmp_path / "clean", specs, _cfg(tmp_path, downloads_in_flight=0))
        before = busy.requests
        root = tmp_path / "retried"
        for sid, clips in enumerate(shard_plan(specs, SHARD)):
            process_shard(ShardJob(str(root), sid, clips, cfg, retry_failed=True))
        assert busy.requests - before == 2  # only the failed clips were fetched again
    assert index_rows(str(root)) == index_rows(str(tmp_path / "clean"))
    assert _left(tmp_path) == []


def test_stopping_early_cleans_up_fetched_files(tmp_path: Path) -> None:
    with MediaServer(fallback=(SAMPLES / "house_lo.ogg").read_bytes(), latency=0.1) as srv:
        clips = [_earth(f"c{i}", f"{srv.url}/media/c{i}.ogg") for i in range(6)]
        with closing(prefetched(clips, _cfg(tmp_path, downloads_in_flight=3))) as it:
            clip, got = next(it)
            assert clip is clips[0] and isinstance(got, Fetched)
            got.cleanup()
            time.sleep(0.5)  # the next three are fetched and wait on disk
            assert 1 <= len(_left(tmp_path)) <= 3
        assert srv.requests <= 4
    assert _left(tmp_path) == []


_KILLED = r"""
import json, sys
from pipeline.manifest import ClipSpec
from pipeline.shard_task import ShardJob, process_shard
from pipeline.sources import SourceConfig
a = json.loads(sys.argv[1])
clips = [ClipSpec(**c) for c in a["clips"]]
process_shard(ShardJob(a["store"], 0, clips, SourceConfig(download_dir=a["dl"],
                                                          downloads_in_flight=4)))
"""


def test_a_task_killed_with_downloads_in_flight_resumes_clean(tmp_path: Path) -> None:
    """The crash hook SIGKILLs the task half-way with fetched and in-flight downloads; the
    next run sweeps them and commits the same store as an uninterrupted run."""
    with MediaServer(fallback=(SAMPLES / "earth.mp4").read_bytes(), latency=0.3) as srv:
        clips = [_earth(f"c{i}", f"{srv.url}/media/c{i}.mp4") for i in range(6)]
        root = tmp_path / "store"
        create_store(str(root), StoreSpec(), None)
        arg = {"store": str(root), "dl": str(tmp_path / "dl"),
               "clips": [dict(clip_id=c.clip_id, source_id=c.source_id, start=c.start,
                              end=c.end, uri=c.uri, labels=c.labels, split=c.split)
                         for c in clips]}
        env = {**os.environ, CRASH_ENV: str(tmp_path / "crashed")}
        done = subprocess.run([sys.executable, "-c", _KILLED, json.dumps(arg)], env=env,
                              cwd=REPO, timeout=120)
        assert done.returncode == -signal.SIGKILL
        assert _left(tmp_path)  # the dead task's downloads are still there...
        assert 0 not in open_writer(str(root)).committed_shards()
        process_shard(ShardJob(str(root), 0, clips, _cfg(tmp_path)))  # ...until this run
        assert _left(tmp_path) == []
        ref = tmp_path / "ref"
        create_store(str(ref), StoreSpec(), None)
        process_shard(ShardJob(str(ref), 0, clips, _cfg(tmp_path, downloads_in_flight=0)))
    assert index_rows(str(root)) == index_rows(str(ref))
    assert [r["status"] for r in _rows(root)] == ["ok"] * 6


def test_cli_flags_reach_the_source_config(tmp_path: Path) -> None:
    from pipeline.cli import _options, build_parser

    base = ["build", "--manifest", "m.csv", "--out", str(tmp_path / "s")]
    plain = _options(build_parser().parse_args(base)).source
    assert (plain.downloads_in_flight, plain.max_per_host, plain.host_rate) == (16, 16, None)
    args = build_parser().parse_args(base + ["--downloads-in-flight", "0", "--max-per-host",
                                             "2", "--host-rate", "0.5"])
    src = _options(args).source
    assert (src.downloads_in_flight, src.max_per_host, src.host_rate) == (0, 2, 0.5)


def test_latency_bench_figures_are_consistent() -> None:
    """`pipeline bench --latency` accounting (speed itself is judged by running it)."""
    from pipeline.bench import format_latency, latency_bench

    res = latency_bench([SAMPLES / "house_lo.ogg"], 0.1, clips=2, depth=2, rounds=1)
    r = res["clips_per_s"]
    assert set(r) == {"off@0", "on@0", "off@0.1", "on@0.1"} and min(r.values()) > 0
    assert res["keeps"] == pytest.approx(r["on@0.1"] / r["on@0"])
    assert res["speedup_at_latency"] == pytest.approx(r["on@0.1"] / r["off@0.1"])
    assert r["off@0.1"] < 1 / 0.1  # prefetch off: every clip waits its 0.1 s
    assert "keeps" in format_latency(res)
