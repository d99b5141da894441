"""YouTube (optional extra ``youtube``): download ONLY the clip's segment at <= 360p.

yt-dlp's ``download_ranges`` asks ffmpeg to read just ``[start, end)`` of the chosen
format, so a 10-s clip never downloads the whole video. ``youtube_url_template`` lets the
same code run against any URL yt-dlp understands (its generic extractor handles a plain
http URL, which is how the tests exercise it offline on 127.0.0.1).

yt-dlp runs in a child process (``python -c _CHILD``, the options as JSON) so that the
download has a hard wall-clock deadline: past ``download_deadline`` the child's process
group (yt-dlp and the ffmpeg it runs) is killed; the deadline starts once the child has
imported yt-dlp (it has ``STARTUP_S`` for that). The child also asks the kernel to kill it
when its worker dies (``PR_SET_PDEATHSIG``). Redirects inside yt-dlp are yt-dlp's (YouTube
CDNs are other hosts); the first URL's scheme is checked here. "HTTP Error 429" / "Too
Many Requests" is retried by ``pipeline.sources.with_retries`` with backoff, and each run
takes its turn on the first URL's host (pipeline/hosts.py). Costs ~0.6 s CPU per clip
to start the child (importing yt-dlp), small beside a YouTube extraction.
"""

from __future__ import annotations

import glob
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

from pipeline.deadline import Deadline
from pipeline.ffmpeg_bin import ffmpeg_exe
from pipeline.hosts import host_of
from pipeline.manifest import ClipSpec, safe_clip_id
from pipeline.sources import (
    Fetched,
    FetchError,
    Retryable,
    SourceConfig,
    _names,
    check_scheme,
    download_deadline,
    with_retries,
)
from pipeline.workspace import workspace

# Best video <= 360p plus best audio, else the best single file <= 360p; "?" lets formats
# without a known height (generic URLs) through.
FORMAT = "bv*[height<=?360]+ba/b[height<=?360]/wv*+ba/w"
# Seconds the yt-dlp child may take to start (import yt-dlp) before the deadline starts.
STARTUP_S = 60.0
# yt-dlp's words for a host that wants us to slow down (its HTTPError text, YouTube's page)
THROTTLED = re.compile(r"HTTP Error (429|503)|too many requests", re.IGNORECASE)


def _status_of(message: str) -> str:
    m = message.lower()
    if "404" in m or "not found" in m or "unavailable" in m or "private video" in m:
        return "not_found"
    if "timed out" in m or "timeout" in m:
        return "timeout"
    if "larger than" in m or "max-filesize" in m:
        return "too_large"
    return "download_error"


# The child: die with the parent (Linux prctl PR_SET_PDEATHSIG = 1), then run yt-dlp with
# the JSON options; "ranges" becomes yt-dlp's download_ranges. Exit 3 + message on failure.
_CHILD = r"""
import ctypes, json, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
except Exception:
    pass
import yt_dlp
from yt_dlp.utils import download_range_func
sys.stdout.write("ready\n")
sys.stdout.flush()
opts = json.loads(sys.argv[1])
opts["download_ranges"] = download_range_func(None, [tuple(r) for r in opts.pop("ranges")])
class Quiet:
    def debug(self, m): pass
    info = warning = error = debug
opts["logger"] = Quiet()
try:
    with yt_dlp.YoutubeDL(opts) as ydl:
        ydl.download([sys.argv[2]])
except Exception as err:
    sys.stderr.write(f"{type(err).__name__}: {err}"[:2000])
    sys.exit(3)
"""


def ydl_options(spec: ClipSpec, cfg: SourceConfig, outdir: str) -> dict:
    """yt-dlp's options (JSON-able; the child turns ``ranges`` into download_ranges)."""
    return {
        "format": FORMAT,
        "ranges": [[spec.start, spec.end]],
        "outtmpl": os.path.join(outdir, "clip.%(ext)s"),
        "quiet": True, "no_warnings": True, "noprogress": True, "noplaylist": True,
        "socket_timeout": cfg.timeout, "retries": cfg.retries,
        "max_filesize": cfg.max_bytes,
        "ffmpeg_location": ffmpeg_dir(cfg.ffmpeg),
        "cachedir": False,
    }


def ffmpeg_dir(user: str | None = None) -> str:
    """A folder holding ``ffmpeg`` (a symlink to our binary): yt-dlp only accepts
    binaries named ``ffmpeg``, and imageio-ffmpeg's is named ``ffmpeg-linux-...``."""
    exe = ffmpeg_exe(user)
    if os.path.basename(exe) == "ffmpeg":
        return os.path.dirname(exe)
    folder = os.path.join(tempfile.gettempdir(), f"mavil-ffmpeg-{os.getuid()}")
    os.makedirs(folder, exist_ok=True)
    link = os.path.join(folder, "ffmpeg")
    if os.path.realpath(link) != os.path.realpath(exe):
        tmp = f"{link}.{os.getpid()}.{threading.get_ident()}"  # prefetch threads race here
        os.symlink(exe, tmp)
        os.replace(tmp, link)
    return folder


def _ensure_on_path(folder: str) -> None:
    # yt-dlp's FFmpegFD.available() ignores ffmpeg_location and searches PATH.
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if folder not in parts:
        os.environ["PATH"] = os.pathsep.join([folder, *parts])


def run_child(args: list[str], deadline_s: float, startup_s: float = STARTUP_S
              ) -> tuple[int, str]:
    """Run ``args`` in its own process group: it has ``startup_s`` to print its first line
    (``ready``, once its imports are done), then ``deadline_s`` to finish; past either the
    whole group is killed and a ``timeout`` FetchError raised. Returns (exit code, stderr)."""
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, start_new_session=True) as proc:
        try:
            if not select.select([proc.stdout], [], [], startup_s)[0]:
                raise subprocess.TimeoutExpired(args, startup_s)
            proc.stdout.readline()  # type: ignore[union-attr]
            _, err = proc.communicate(timeout=deadline_s)
        except subprocess.TimeoutExpired as exc:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise FetchError("timeout", f"yt-dlp exceeded its {deadline_s:g}-s deadline") from exc
    return proc.returncode, err.decode("utf-8", "replace")


def fetch_youtube(spec: ClipSpec, cfg: SourceConfig) -> Fetched:
    """Download the segment into a fresh folder inside ``download_dir``; "Too Many
    Requests" is retried with backoff (``with_retries``, the URL's host paused)."""
    import importlib.util

    if importlib.util.find_spec("yt_dlp") is None:
        raise FetchError("download_error", "yt-dlp not installed (pip install "
                         "'mavil-store[youtube]')")
    if not safe_clip_id(spec.clip_id):
        raise FetchError("download_error", f"unsafe clip id {spec.clip_id!r}")
    url = cfg.youtube_url_template.format(**_names(spec))
    check_scheme(url, cfg)
    _ensure_on_path(ffmpeg_dir(cfg.ffmpeg))
    deadline = Deadline(download_deadline(cfg))
    return with_retries(lambda: _fetch_once(spec, url, cfg, deadline), cfg, deadline,
                        host_of(url))


def _fetch_once(spec: ClipSpec, url: str, cfg: SourceConfig, deadline: Deadline) -> Fetched:
    """One yt-dlp run with what is left of ``deadline`` (counted once the child is ready)."""
    outdir = tempfile.mkdtemp(prefix=spec.clip_id + ".", dir=workspace(cfg.download_dir))
    args = [sys.executable, "-c", _CHILD, json.dumps(ydl_options(spec, cfg, outdir)), url]
    try:
        rc, err = run_child(args, max(0.001, deadline.remaining()))
    except FetchError as exc:  # killed at the deadline
        _remove(outdir)
        raise FetchError("timeout", f"yt-dlp exceeded its {deadline.seconds:g}-s "
                         "deadline") from exc
    except BaseException:
        _remove(outdir)
        raise
    if rc != 0:
        _remove(outdir)
        message = " ".join(err.split()) or f"yt-dlp exit {rc}"
        message = message.removeprefix("DownloadError: ").removeprefix("ERROR: ")
        if THROTTLED.search(message):
            raise Retryable("download_error", message[:300], throttled=True)
        raise FetchError(_status_of(message), message[:300])
    files = [f for f in glob.glob(os.path.join(outdir, "clip.*")) if not f.endswith(".part")]
    if not files:
        _remove(outdir)
        raise FetchError("too_large" if cfg.max_bytes else "download_error",
                         "yt-dlp produced no file (over max size or no format)")
    return Fetched(files[0], url, True, True, folder=outdir)


def _remove(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
