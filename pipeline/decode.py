"""Decode the [start, end) window of a media file ONCE with ffmpeg (no shell).

One ffmpeg process, two outputs: the first audio stream downmixed to mono and resampled
to 16 kHz float32 (stdout), and the first video stream at 2 fps, resized so the longer
side is 360 px with the aspect ratio kept (MAViL supplement B.1), as RGB (PPM) or MJPEG
frames on an extra pipe. ffmpeg autorotates by default, so a display-matrix rotation is
honoured: the scale filters see the rotated picture.

Windows are bounded: at most ``max_seconds`` are decoded (the store's clip length plus a
tolerance; a 1-hour window would otherwise be decoded whole), an empty window or one that
starts at or past the end of the file is a ``decode_error``, and so is a still image or a
1-frame video without audio (2-fps sampling gives it no frame; the reason says so).
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
from dataclasses import dataclass, field

import ffmpeg
import numpy as np

from pipeline.ffmpeg_bin import ffmpeg_exe
from pipeline.probe import MediaError, MediaInfo, parse_probe


@dataclass
class DecodeOptions:
    sample_rate: int = 16000
    frame_rate: float = 2.0
    longer_side: int = 360
    max_frames: int = 20
    video_output: str = "rgb"      # "rgb" (raw frames, JPEG in Python) | "mjpeg" (ffmpeg JPEG)
    mjpeg_qscale: int = 3          # ffmpeg -q:v for video_output="mjpeg" (2 best .. 31)
    ffmpeg: str | None = None
    threads: int = 1               # decoder threads per ffmpeg process (1 per worker core)
    timeout: float = 120.0
    max_seconds: float | None = None  # longest window decoded (shard tasks: clip + tolerance)


@dataclass
class Decoded:
    info: MediaInfo
    audio: np.ndarray | None            # float32 mono in [-1, 1], or None
    frames: list[np.ndarray] = field(default_factory=list)  # uint8 [H, W, 3] (rgb mode)
    jpegs: list[bytes] = field(default_factory=list)         # (mjpeg mode)
    width: int = 0
    height: int = 0

    @property
    def n_frames(self) -> int:
        return len(self.frames) or len(self.jpegs)


def target_size(display_w: float, display_h: float, longer: int) -> tuple[int, int]:
    """What the scale chain gives: longer side -> ``longer``, aspect kept, the shorter side
    rounded down to an even number (ffmpeg ``force_original_aspect_ratio=decrease`` with
    ``force_divisible_by=2``). Used by tests and docs; the decoder reads the real size."""
    if display_w >= display_h:
        return longer, max(2, int(display_h * longer / display_w) // 2 * 2)
    return max(2, int(display_w * longer / display_h) // 2 * 2), longer


def _read_all(fd: int, out: list[bytes]) -> None:
    with os.fdopen(fd, "rb", closefd=True) as f:
        out.append(f.read())


def split_jpegs(data: bytes) -> list[bytes]:
    """Split an MJPEG image2pipe stream into JPEG files (SOI ... EOI)."""
    out, pos = [], 0
    while True:
        s = data.find(b"\xff\xd8", pos)
        if s < 0:
            return out
        e = data.find(b"\xff\xd9", s + 2)
        if e < 0:
            return out
        out.append(data[s:e + 2])
        pos = e + 2


def split_ppm(data: bytes | bytearray, limit: int) -> tuple[list[np.ndarray], int, int]:
    """Split a PPM (P6) image2pipe stream into uint8 [H, W, 3] frames."""
    frames: list[np.ndarray] = []
    pos, w, h = 0, 0, 0
    while pos < len(data) and len(frames) < limit:
        header = data[pos:pos + 32].split(maxsplit=4)
        if len(header) < 4 or header[0] != b"P6":
            break
        w, h = int(header[1]), int(header[2])
        start = data.index(b"255", pos + 2) + 4  # "255" + one whitespace byte
        end = start + w * h * 3
        if end > len(data):
            break
        frames.append(np.frombuffer(data, np.uint8, w * h * 3, start).reshape(h, w, 3))
        pos = end
    return frames, w, h


def build_args(path: str, start: float, duration: float, opts: DecodeOptions, video_fd: int,
               audio: bool, video: bool, optional: bool) -> list[str]:
    """One ffmpeg command, two outputs (argument list, never a shell string)."""
    inp = ffmpeg.input(path, ss=f"{start:.6f}", t=f"{duration:.6f}", threads=opts.threads)
    q = "?" if optional else ""
    outs = []
    if audio:
        outs.append(inp[f"a:0{q}"].output("pipe:1", format="f32le", acodec="pcm_f32le", ac=1,
                                          ar=opts.sample_rate))
    if video:
        # 2 fps first (only kept frames are scaled); square pixels; longer side -> 360
        v = inp[f"v:0{q}"].filter("fps", fps=opts.frame_rate).filter("scale", "iw*sar", "ih")
        v = v.filter("scale", opts.longer_side, opts.longer_side,
                     force_original_aspect_ratio="decrease", force_divisible_by=2)
        v = v.filter("setsar", "1")
        if opts.video_output == "mjpeg":
            v = v.output(f"pipe:{video_fd}", format="image2pipe", vcodec="mjpeg",
                         pix_fmt="yuvj420p", **{"q:v": opts.mjpeg_qscale},
                         frames=opts.max_frames)
        else:
            v = v.output(f"pipe:{video_fd}", format="image2pipe", vcodec="ppm",
                         pix_fmt="rgb24", frames=opts.max_frames)
        outs.append(v)
    args = ffmpeg.merge_outputs(*outs).compile(cmd=ffmpeg_exe(opts.ffmpeg))
    args[1:1] = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
                 "-filter_complex_threads", str(opts.threads)]
    return args


def _run(args: list[str], r_fd: int, w_fd: int, timeout: float) -> tuple[int, bytes, bytes, str]:
    video_buf: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(r_fd, video_buf), daemon=True)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(w_fd,))
    finally:
        os.close(w_fd)
    reader.start()
    try:
        audio_bytes, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise MediaError("timeout", f"decode took longer than {timeout:.0f} s") from exc
    finally:
        reader.join(timeout=10)
    return proc.returncode, audio_bytes, (video_buf[0] if video_buf else b""), \
        err.decode("utf-8", "replace")


def _input_part(log: str) -> str:
    """The ``Input #0`` dump of a log, without the output side (which also says Stream)."""
    for marker in ("Stream mapping:", "\nOutput #"):
        log = log.split(marker, 1)[0]
    return log


def _decode(path: str, start: float, end: float, opts: DecodeOptions, audio: bool,
            video: bool, optional: bool) -> tuple[int, bytes, bytes, str]:
    r_fd, w_fd = os.pipe()
    args = build_args(path, start, end - start, opts, w_fd, audio, video, optional)
    return _run(args, r_fd, w_fd, opts.timeout)


def decode_clip(path: str, start: float, end: float, opts: DecodeOptions | None = None) -> Decoded:
    """Decode ``[start, end)`` of the local file ``path``; raises MediaError on failure.

    One ffmpeg process in the common case: both streams are mapped optionally and the
    stream layout is read from the same run's log (no separate probe). Only when a file
    lacks one of the streams does ffmpeg refuse the stream-less output; the run is then
    repeated with the streams that exist.
    """
    opts = opts or DecodeOptions()
    path = os.path.abspath(path)
    if os.path.getsize(path) == 0:
        raise MediaError("bad_media", "empty file")
    if not end - start >= 1e-3:  # "-t 0.000000" would mean the whole file to ffmpeg
        raise MediaError("decode_error", f"empty window [{start:g}, {end:g})")
    if opts.max_seconds is not None:
        end = min(end, start + opts.max_seconds)
    rc, audio_bytes, video, log = _decode(path, start, end, opts, True, True, True)
    info = parse_probe(_input_part(log))
    if not (info.has_audio or info.has_video):
        raise MediaError("no_streams", "no audio or video stream")
    if info.duration > 0 and start >= info.duration:
        raise MediaError("decode_error", f"window starts at {start:g} s, at or past the end "
                         f"of the {info.duration:.2f}-s file")
    if rc != 0 and not (info.has_audio and info.has_video):
        rc, audio_bytes, video, log = _decode(path, start, end, opts, info.has_audio,
                                              info.has_video, False)
    if rc != 0 and not (audio_bytes or video):
        lines = [ln for ln in log.strip().splitlines() if ("rror" in ln or "ailed" in ln
                 or "Nothing was written" in ln) and "Conversion failed" not in ln]
        raise MediaError("decode_error", (lines or log.strip().splitlines() or [
            f"ffmpeg exit {rc}"])[-1].strip())
    # A non-zero exit with some output (e.g. one stream had no packets in the window):
    # keep what exists; has_audio / has_video / duration say what it is.
    out = Decoded(info=info, audio=None)
    if info.has_audio and len(audio_bytes) >= 4:
        audio = np.frombuffer(audio_bytes[: len(audio_bytes) // 4 * 4], dtype="<f4")
        out.audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    if video:
        if opts.video_output == "mjpeg":
            out.jpegs = split_jpegs(video)[: opts.max_frames]
            if out.jpegs:
                from PIL import Image

                out.width, out.height = Image.open(io.BytesIO(out.jpegs[0])).size
        else:
            out.frames, out.width, out.height = split_ppm(bytearray(video), opts.max_frames)
    if out.audio is None and out.n_frames == 0:
        if info.has_video and count_frames(path, start, opts) == 1:
            raise MediaError("decode_error", "still image or 1-frame video without audio: "
                             f"no frame at {opts.frame_rate:g} fps (not stored)")
        raise MediaError("decode_error", "no decodable audio or video in the window")
    return out


def count_frames(path: str, start: float, opts: DecodeOptions, limit: int = 2) -> int:
    """Frames the first video stream has from ``start`` (up to ``limit``), without the
    fps filter: tells a still image (1) from a window that has no frame."""
    seek = ["-ss", f"{start:.6f}"] if start > 0 else []  # -ss 0 on a JPEG gives nothing
    args = [ffmpeg_exe(opts.ffmpeg), "-nostdin", "-hide_banner", "-loglevel", "error", *seek,
            "-i", path, "-map", "0:v:0", "-frames:v", str(limit), "-vf", "scale=16:16",
            "-f", "image2pipe", "-vcodec", "ppm", "pipe:1"]
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=opts.timeout, check=False)
    except subprocess.TimeoutExpired:
        return 0
    return len(split_ppm(bytearray(proc.stdout), limit)[0])
