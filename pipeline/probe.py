"""What a media file holds, read from ``ffmpeg -i`` (imageio-ffmpeg ships no ffprobe)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from pipeline.ffmpeg_bin import ffmpeg_exe

_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #0:\d+.*?: (Video|Audio): (.*)")
_SIZE = re.compile(r", (\d{1,5})x(\d{1,5})(?=[ ,]|$)")
_SAR = re.compile(r"\[SAR (\d+):(\d+) DAR")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
_HZ = re.compile(r"(\d+) Hz, ([^,]+)")


class MediaError(Exception):
    """A file ffmpeg cannot open; ``status`` is the index status, ``reason`` the detail."""

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@dataclass
class MediaInfo:
    duration: float            # container duration, seconds (0 when unknown)
    has_audio: bool
    has_video: bool
    width: int = 0             # coded size of the first video stream
    height: int = 0
    sar: float = 1.0           # sample aspect ratio (pixel width / height)
    rotation: float = 0.0      # display-matrix rotation, degrees
    sample_rate: int = 0
    channels: str = ""

    def display_size(self) -> tuple[int, int]:
        """Width, height as shown (SAR applied, rotated as ffmpeg's autorotate does)."""
        w, h = self.width * self.sar, float(self.height)
        if round(abs(self.rotation)) % 180 == 90:
            w, h = h, w
        return round(w), round(h)


def parse_probe(text: str) -> MediaInfo:
    if "Input #0" not in text:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        raise MediaError("bad_media", lines[-1] if lines else "ffmpeg could not open the input")
    m = _DURATION.search(text)
    duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else 0.0
    info = MediaInfo(duration=duration, has_audio=False, has_video=False)
    for kind, rest in _STREAM.findall(text):
        if kind == "Video" and not info.has_video and "attached pic" not in rest:
            size = _SIZE.search(rest)
            if not size or int(size[1]) == 0 or int(size[2]) == 0:
                continue
            info.has_video = True
            info.width, info.height = int(size[1]), int(size[2])
            sar = _SAR.search(rest)
            if sar and int(sar[1]) > 0 and int(sar[2]) > 0:
                info.sar = int(sar[1]) / int(sar[2])
        elif kind == "Audio" and not info.has_audio:
            info.has_audio = True
            hz = _HZ.search(rest)
            if hz:
                info.sample_rate, info.channels = int(hz[1]), hz[2].strip()
    rot = _ROTATION.search(text)
    if rot and info.has_video:
        info.rotation = float(rot[1])
    return info


def probe(path: str, ffmpeg: str | None = None, timeout: float = 30.0) -> MediaInfo:
    """Probe ``path`` (an absolute local path); raises MediaError."""
    args = [ffmpeg_exe(ffmpeg), "-hide_banner", "-nostdin", "-i", path]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise MediaError("timeout", f"probe took longer than {timeout:.0f} s") from err
    return parse_probe(proc.stderr.decode("utf-8", "replace"))
