"""Ranged reads on object storage: a batch's chunks in as few requests as one round allows.

On S3 the cost of a read is mostly per request, not per byte: a ranged GET costs ~2.5 ms
of client CPU (botocore signing and parsing) whatever its size up to a few MB, and a
round trip of latency (store/FORMAT.md "Object storage"). So the chunks wanted from one
array file are merged into ONE range whenever the bytes between them are fewer than
MAX_GAP (a clip's fbank is 256 KiB: a batch from a 6-clip shard is one range per array,
a batch scattered over a 1000-clip shard stays one range per run of nearby clips), and
the ranges of every file a batch touches -- all its shards, all their arrays -- go out
together in one ``fs.cat_ranges`` call (s3fs issues them concurrently): one round trip
per batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

# read over gaps up to this rather than add a request: ~2 MiB is what one request costs
# at S3's ~100-200 MB/s per connection and ~10-20 ms first-byte latency
MAX_GAP = 2 * 1024 * 1024
NO_CHUNK = 2**64 - 1


def plan_ranges(index: Any, rows: Sequence[int], skip: Any = (),
                max_gap: int = MAX_GAP) -> list[tuple[int, int, list[int]]]:
    """(start, end, rows in it) byte ranges covering ``rows`` of a shard's chunk index
    (uint64 (offset, nbytes) per row), chunks less than ``max_gap`` apart merged; rows
    never written or in ``skip`` are left out."""
    want = sorted((int(index[r, 0]), int(index[r, 1]), r) for r in set(rows)
                  if int(index[r, 0]) != NO_CHUNK and r not in skip)
    out: list[tuple[int, int, list[int]]] = []
    for offset, nbytes, r in want:
        if out and offset - out[-1][1] <= max_gap:
            start, end, members = out[-1]
            out[-1] = (start, max(end, offset + nbytes), [*members, r])
        else:
            out.append((offset, offset + nbytes, [r]))
    return out


def fetch_chunks(fs: Any, wanted: Sequence[tuple[Any, Sequence[int]]]) -> int:
    """Fill ``f.cached[row]`` for every (ShardFile, rows) in ``wanted`` with one
    ``fs.cat_ranges`` call; returns the number of ranges requested. A range that comes
    back short is left out: ``read_chunk`` fetches it again and reports what is wrong."""
    paths, starts, ends, groups = [], [], [], []
    for f, rows in wanted:
        for start, end, members in plan_ranges(f.index, rows, f.cached):
            paths.append(f.path)
            starts.append(start)
            ends.append(end)
            groups.append((f, members))
    if not paths:
        return 0
    for (f, members), data, lo, hi in zip(groups, cat_ranges(fs, paths, starts, ends),
                                          starts, ends, strict=True):
        if not isinstance(data, bytes) or len(data) != hi - lo:
            continue
        buf = memoryview(bytearray(data))  # writable: a Clip owns its fbank memory
        for r in members:
            o = int(f.index[r, 0]) - lo
            f.cached[r] = buf[o:o + int(f.index[r, 1])]
    return len(paths)


# -- S3: ranged GETs on presigned URLs ---------------------------------------------------
# botocore spends ~2.5-4 ms of CPU per request (signing, its event hooks, parsing) -- more
# than a loader worker spends decoding a clip's fbank. A presigned GET URL per object
# (signed once, reused for SIGN_SECONDS) turns each ranged read into a plain HTTP request
# on a keep-alive urllib3 pool, ~1 ms of CPU. Only for a plain s3fs set-up (default TLS
# verification, no proxy, no requester-pays / SSE-C / version options); anything unusual,
# and any answer that is not the exact 206, goes through s3fs as before.
SIGN_SECONDS = 3600
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY")


def cat_ranges(fs: Any, paths: list[str], starts: list[int], ends: list[int]) -> list[Any]:
    """``fs.cat_ranges`` (bytes or an exception per range), through presigned URLs on S3."""
    fast = _presigned(fs)
    if fast is None:
        return fs.cat_ranges(paths, starts, ends, on_error="return")
    return fast.cat_ranges(paths, starts, ends)


_CLIENTS: dict[tuple[int, int], Any] = {}


def _presigned(fs: Any) -> _PresignedReader | None:
    protocol = getattr(fs, "protocol", None)
    if protocol not in ("s3", ("s3", "s3a")) or not hasattr(fs, "url"):
        return None
    if set(fs.client_kwargs) - {"endpoint_url", "region_name"} or fs.req_kw \
            or fs.version_aware or getattr(fs, "anon", False) \
            or any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    key = (os.getpid(), id(fs))  # per process: a forked worker makes its own pool
    reader = _CLIENTS.get(key)
    if reader is None:
        reader = _CLIENTS[key] = _PresignedReader(fs)
    return reader


class _PresignedReader:
    def __init__(self, fs: Any) -> None:
        import urllib3

        self.fs = fs
        retry = urllib3.Retry(total=4, backoff_factor=0.1, redirect=0,
                              status_forcelist=(429, 500, 502, 503, 504),
                              allowed_methods=("GET",), raise_on_status=False)
        self.pool = urllib3.PoolManager(maxsize=16, retries=retry,
                                        timeout=urllib3.Timeout(connect=10, read=60))
        self.urls: dict[str, tuple[str, float]] = {}
        self.threads: Any = None

    def url(self, path: str) -> str:
        url, expires = self.urls.get(path, ("", 0.0))
        if time.time() > expires - 300:  # re-sign well before the signature runs out
            url = self.fs.url(path, expires=SIGN_SECONDS)
            self.urls[path] = (url, time.time() + SIGN_SECONDS)
        return url

    def get(self, path: str, start: int, end: int) -> Any:
        r = self.pool.request("GET", self.url(path), preload_content=True,
                              headers={"Range": f"bytes={start}-{end - 1}"})
        if r.status == 206 and len(r.data) == end - start:
            return r.data
        self.urls.pop(path, None)  # expired, moved, throttled past the retries: s3fs
        try:
            return self.fs.cat_file(path, start=start, end=end)
        except Exception as exc:  # noqa: BLE001 - returned per range, as cat_ranges does
            return exc

    def cat_ranges(self, paths: list[str], starts: list[int], ends: list[int]) -> list[Any]:
        if len(paths) == 1:
            return [self.get(paths[0], starts[0], ends[0])]
        if self.threads is None:
            from concurrent.futures import ThreadPoolExecutor

            self.threads = ThreadPoolExecutor(16, thread_name_prefix="store-s3-get")
        return list(self.threads.map(self.get, paths, starts, ends))
