"""YouTube (optional extra ``youtube``): download ONLY the clip's segment at <= 360p.

yt-dlp's ``download_ranges`` asks ffmpeg to read just ``[start, end)`` of the chosen
format, so a 10-s clip never downloads the whole video. ``youtube_url_template`` lets the
same code run against any URL yt-dlp understands (its generic extractor handles a plain
http URL, which is how the tests exercise it offline on 127.0.0.1).
"""

from __future__ import annotations

import glob
import os
import tempfile

from pipeline.ffmpeg_bin import ffmpeg_exe
from pipeline.manifest import ClipSpec, safe_clip_id
from pipeline.sources import Fetched, FetchError, SourceConfig, _names, check_scheme

# Best video <= 360p plus best audio, else the best single file <= 360p; "?" lets formats
# without a known height (generic URLs) through.
FORMAT = "bv*[height<=?360]+ba/b[height<=?360]/wv*+ba/w"


def _status_of(message: str) -> str:
    m = message.lower()
    if "404" in m or "not found" in m or "unavailable" in m or "private video" in m:
        return "not_found"
    if "timed out" in m or "timeout" in m:
        return "timeout"
    if "larger than" in m or "max-filesize" in m:
        return "too_large"
    return "download_error"


def ydl_options(spec: ClipSpec, cfg: SourceConfig, outdir: str) -> dict:
    from yt_dlp.utils import download_range_func

    return {
        "format": FORMAT,
        "download_ranges": download_range_func(None, [(spec.start, spec.end)]),
        "outtmpl": os.path.join(outdir, "clip.%(ext)s"),
        "quiet": True, "no_warnings": True, "noprogress": True, "noplaylist": True,
        "socket_timeout": cfg.timeout, "retries": cfg.retries,
        "max_filesize": cfg.max_bytes,
        "ffmpeg_location": ffmpeg_dir(cfg.ffmpeg),
        "logger": _QuietLogger(),
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
        tmp = f"{link}.{os.getpid()}"
        os.symlink(exe, tmp)
        os.replace(tmp, link)
    return folder


def _ensure_on_path(folder: str) -> None:
    # yt-dlp's FFmpegFD.available() ignores ffmpeg_location and searches PATH.
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if folder not in parts:
        os.environ["PATH"] = os.pathsep.join([folder, *parts])


class _QuietLogger:
    def debug(self, msg: str) -> None:
        pass

    def info(self, msg: str) -> None:
        pass

    def warning(self, msg: str) -> None:
        pass

    def error(self, msg: str) -> None:
        pass


def fetch_youtube(spec: ClipSpec, cfg: SourceConfig) -> Fetched:
    """Download the segment into a fresh folder inside ``download_dir``."""
    try:
        import yt_dlp
    except ImportError as err:
        raise FetchError("download_error", "yt-dlp not installed (pip install "
                         "'mavil-store[youtube]')") from err
    if not safe_clip_id(spec.clip_id):
        raise FetchError("download_error", f"unsafe clip id {spec.clip_id!r}")
    url = cfg.youtube_url_template.format(**_names(spec))
    check_scheme(url, cfg)
    base = os.path.realpath(cfg.download_dir or tempfile.gettempdir())
    os.makedirs(base, exist_ok=True)
    outdir = tempfile.mkdtemp(prefix=spec.clip_id + ".", dir=base)
    _ensure_on_path(ffmpeg_dir(cfg.ffmpeg))
    try:
        with yt_dlp.YoutubeDL(ydl_options(spec, cfg, outdir)) as ydl:
            ydl.download([url])
    except yt_dlp.utils.DownloadError as err:
        _remove(outdir)
        raise FetchError(_status_of(str(err)), str(err).removeprefix("ERROR: ")[:300]) from err
    except Exception as err:  # yt-dlp raises many kinds; each is this clip's failure
        _remove(outdir)
        raise FetchError("download_error", f"{type(err).__name__}: {err}"[:300]) from err
    files = [f for f in glob.glob(os.path.join(outdir, "clip.*")) if not f.endswith(".part")]
    if not files:
        _remove(outdir)
        raise FetchError("too_large" if cfg.max_bytes else "download_error",
                         "yt-dlp produced no file (over max size or no format)")
    return Fetched(files[0], url, True, True, folder=outdir)


def _remove(folder: str) -> None:
    for f in glob.glob(os.path.join(folder, "*")):
        os.unlink(f)
    os.rmdir(folder)
