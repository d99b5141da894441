"""Real clips for the store tests, decoded here with the imageio-ffmpeg binary.

Independent of pipeline/: ffmpeg (argument lists, no shell) gives 16 kHz mono PCM and
2-fps RGB frames at longer side 360, PIL encodes the JPEGs, torchaudio's Kaldi fbank
computes the log-mel (AudioMAE parameters), padded/cut to 1024 frames.
"""

from __future__ import annotations

import copy
import io
import signal
import subprocess
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
import torchaudio
from PIL import Image

from store import ClipRecord, StoreSpec

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# (clip_id, file, start, has_audio, has_video, split, labels)
CLIPS = [
    ("bunny", "bigbuckbunny.mp4", 0.0, True, True, "train", [0, 137]),
    ("earth_0", "earth.mp4", 0.0, True, True, "train", [5]),
    ("earth_10", "earth.mp4", 10.0, True, True, "eval", [5, 300]),
    ("city", "cityCC0.mpg", 0.0, False, True, "train", [300]),
    ("speech_0", "speech_two_speakers.wav", 0.0, True, False, "eval", [0]),
    ("speech_10", "speech_two_speakers.wav", 10.0, True, False, "train", [0, 1]),
    ("house", "house_lo.ogg", 0.0, True, False, "train", [137]),
]


def decode_audio(path: Path, start: float, seconds: float = 10.0) -> np.ndarray:
    cmd = [FFMPEG, "-nostdin", "-v", "error", "-ss", str(start), "-t", str(seconds),
           "-i", str(path), "-vn", "-ac", "1", "-ar", "16000", "-f", "s16le", "pipe:1"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype="<i2").copy()


def decode_frames(path: Path, start: float, quality: int, seconds: float = 10.0,
                  longer: int = 360) -> tuple[list[bytes], int, int]:
    gen = imageio_ffmpeg.read_frames(str(path))
    w0, h0 = next(gen)["size"]
    gen.close()
    if w0 >= h0:
        w, h = longer, 2 * round(h0 * longer / w0 / 2)
    else:
        w, h = 2 * round(w0 * longer / h0 / 2), longer
    cmd = [FFMPEG, "-nostdin", "-v", "error", "-ss", str(start), "-t", str(seconds),
           "-i", str(path), "-an", "-vf", f"fps=2,scale={w}:{h}", "-f", "rawvideo",
           "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, h, w, 3)[:20]
    jpegs = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=quality)
        jpegs.append(buf.getvalue())
    return jpegs, h, w


def kaldi_fbank(pcm: np.ndarray, target: int = 1024) -> tuple[np.ndarray, int]:
    wave = torch.from_numpy(pcm.astype(np.float32) / 32768.0)[None]
    wave = wave - wave.mean()
    fb = torchaudio.compliance.kaldi.fbank(
        wave, htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    n = fb.shape[0]
    out = torch.zeros(target, 128)
    out[: min(n, target)] = fb[:target]
    return out.numpy().astype(np.float16), n


_CACHE: dict[tuple[str, int, bool], list[ClipRecord]] = {}


def media_records(media_dir: Path, spec: StoreSpec) -> list[ClipRecord]:
    """Seven real clips plus two failures, as the pipeline would hand them over
    (decoded once per session and settings; each caller gets its own copy)."""
    key = (str(media_dir), spec.jpeg_quality, spec.store_waveform)
    if key not in _CACHE:
        _CACHE[key] = _decode_records(media_dir, spec)
    return copy.deepcopy(_CACHE[key])


def _decode_records(media_dir: Path, spec: StoreSpec) -> list[ClipRecord]:
    torch.set_num_threads(1)
    records = []
    for cid, name, start, has_a, has_v, split, labels in CLIPS:
        path = media_dir / name
        rec = ClipRecord(cid, name, start, start + 10.0, str(path), split, labels,
                         has_audio=has_a, has_video=has_v)
        if has_a:
            pcm = decode_audio(path, start)
            rec.fbank, rec.audio_frames = kaldi_fbank(pcm, spec.target_frames)
            rec.duration = len(pcm) / 16000
            if spec.store_waveform:
                rec.waveform = pcm
        if has_v:
            rec.frames, rec.height, rec.width = decode_frames(path, start, spec.jpeg_quality)
            rec.duration = max(rec.duration, len(rec.frames) / 2.0)
        records.append(rec)
    records.append(ClipRecord("missing", "nope", 0.0, 10.0, "http://127.0.0.1/nope.mp4",
                              "train", [3], status="not_found", error="HTTP 404"))
    records.append(ClipRecord("broken", "bad", 5.0, 15.0, "/dev/null", "eval", [4],
                              status="decode_error", error="moov atom not found"))
    return records


def kill_at_marker(proc: subprocess.Popen, marker: Path, timeout: float = 120.0) -> None:
    """SIGKILL a writer subprocess the moment it creates ``marker`` (its hold point)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"writer exited early: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("writer never reached the kill point")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
