"""A handful of real audio-video clips as model batches, for the models' overfit tests.

Decoded here (independent of pipeline/ and the loader) from /work/shared/data/media with the
imageio-ffmpeg binary (argument lists, no shell): 16 kHz mono PCM -> torchaudio's Kaldi fbank
(128 mel, 25 ms Hanning / 10 ms, AudioMAE/CAV-MAE parameters) padded/cut to 1024 frames and
normalised with the AudioSet statistics of MAViL Table 10; video at 2 fps scaled straight to
224 x 224 (aspect not kept: these are test inputs, not the loader's crops) and
ImageNet-normalised.

Real media pairs are few, so four samples pair real streams from the shared clips:
Big Buck Bunny with its own audio, and three video clips each with a different real
recording. Use :func:`real_clip_batch` (cached per process) or the ``real_clips`` fixture.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
import torchaudio

FBANK_MEAN, FBANK_STD = -4.268, 4.569         # MAViL Table 10, AudioSet
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (video file, video start s, audio file, audio start s)
PAIRS = [
    ("bigbuckbunny.mp4", 0.0, "bigbuckbunny.mp4", 0.0),
    ("earth.mp4", 0.0, "speech_two_speakers.wav", 0.0),
    ("cityCC0.mpg", 0.0, "house_lo.ogg", 0.0),
    ("earth.mp4", 12.0, "speech_two_speakers.wav", 12.0),
]


def _run(args: list[str]) -> bytes:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", *args]
    return subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout


def decode_fbank(path: Path, start: float, seconds: float = 10.0,
                 frames: int = 1024) -> torch.Tensor:
    """Normalised [1, frames, 128] log-mel fbank of ``seconds`` of audio from ``start``."""
    pcm = _run(["-ss", str(start), "-t", str(seconds), "-i", str(path), "-vn", "-ac", "1",
                "-ar", "16000", "-f", "s16le", "pipe:1"])
    wav = torch.from_numpy(np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0)
    wav = (wav - wav.mean()).unsqueeze(0)
    fb = torchaudio.compliance.kaldi.fbank(
        wav, htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    fb = torch.nn.functional.pad(fb, (0, 0, 0, max(0, frames - fb.shape[0])))[:frames]
    return ((fb - FBANK_MEAN) / (2 * FBANK_STD)).unsqueeze(0)  # AudioMAE/AST scaling


def decode_video(path: Path, start: float, num_frames: int = 8, size: int = 224,
                 fps: float = 2.0) -> torch.Tensor:
    """ImageNet-normalised [num_frames, 3, size, size] frames at ``fps`` from ``start``."""
    raw = _run(["-ss", str(start), "-t", str(num_frames / fps + 1), "-i", str(path), "-an",
                "-vf", f"fps={fps},scale={size}:{size}", "-f", "rawvideo", "-pix_fmt", "rgb24",
                "pipe:1"])
    frames = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size, 3)
    if len(frames) < num_frames:  # repeat the last frame of a short clip
        frames = np.concatenate([frames, frames[-1:].repeat(num_frames - len(frames), 0)])
    x = torch.from_numpy(frames[:num_frames].copy()).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    return (x - mean[:, None, None]) / std[:, None, None]


@functools.lru_cache(maxsize=2)
def real_clip_batch(media_dir: str) -> dict[str, torch.Tensor]:
    """{"audio": [4,1,1024,128], "video": [4,8,3,224,224], "frame": [4,3,224,224]}.

    ``frame`` is the middle frame of each clip, CAV-MAE's single-image input.
    """
    media = Path(media_dir)
    audio = torch.stack([decode_fbank(media / a, sa) for _, _, a, sa in PAIRS])
    video = torch.stack([decode_video(media / v, sv) for v, sv, _, _ in PAIRS])
    return {"audio": audio, "video": video, "frame": video[:, video.shape[1] // 2].clone()}


@pytest.fixture(scope="session")
def real_clips(media_dir: Path) -> dict[str, torch.Tensor]:
    return real_clip_batch(str(media_dir))
