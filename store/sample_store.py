"""A small real store built from the shared media (for the loader tests and benchmark).

The media (/work/shared/data/media, or $MAVIL_SHARED/data/media) are decoded with the ffmpeg
binary (argument lists, never a shell string): 16 kHz mono float32 PCM and 2-fps frames
scaled to a longer side of 360, re-encoded as JPEG at the store's quality. Time-shifted
10-s windows of them become clips (fbank via store.fbank), written with the store's writer.
This is not the production pipeline (pipeline/ is); it only needs the store package.

``python -m store.sample_store cache DIR`` saves the decoded media (.npz, no pickle); with
``$MAVIL_MEDIA_CACHE=DIR`` a machine without ffmpeg builds the same stores from them
(.ci/gpu-checks on the GPU host). ``build OUT --clips N`` writes a loader-benchmark store.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

# (media file, start second) windows; 12 clips over 5 files: audio+video, video without
# audio, audio without video, clips shorter than 10 s
SAMPLE_PLAN = [
    ("earth.mp4", 0.0),
    ("bigbuckbunny.mp4", 0.0),
    ("cityCC0.mpg", 0.0),
    ("speech_two_speakers.wav", 0.0),
    ("earth.mp4", 5.0),
    ("house_lo.ogg", 0.0),
    ("earth.mp4", 10.0),
    ("bigbuckbunny.mp4", 1.0),
    ("cityCC0.mpg", 2.0),
    ("speech_two_speakers.wav", 10.0),
    ("earth.mp4", 15.0),
    ("earth.mp4", 20.0),
]


# the loader benchmark's clips: audio+video windows of the two videos with sound
AV_MEDIA = ("earth.mp4", "bigbuckbunny.mp4")


def av_plan(clips: int) -> list[tuple[str, float]]:
    """At least ``clips`` audio+video windows (the loader benchmark's store): 3-s shifts of
    earth.mp4 and the start of bigbuckbunny.mp4, repeated."""
    plan = [(m, float(s)) for m in AV_MEDIA for s in range(0, 19, 3)
            if m == "earth.mp4" or s == 0]
    return plan * -(-max(1, clips) // len(plan))


def default_media_dir() -> Path:
    env = os.environ.get("MAVIL_SHARED")
    shared = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return shared / "data" / "media"


def ffmpeg_exe() -> str:
    exe = os.environ.get("MAVIL_FFMPEG")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class Media:
    """A decoded media file: 16 kHz mono float32 audio and 2-fps JPEG frames (longer side 360)."""

    waveform: np.ndarray | None
    frames: list[bytes]
    height: int
    width: int


def cached_name(path: Path, quality: int = 90, fps: float = 2.0, longer: int = 360) -> str:
    """The file name of ``path``'s decoded media in a media cache (:func:`save_media`)."""
    return f"{Path(path).name}.q{quality}.fps{fps:g}.l{longer}.npz"


def save_media(media: Media, out: Path) -> None:
    """``media`` as one .npz (plain arrays, no pickle): the waveform, the JPEG frames as one
    byte array with their offsets (n + 1, from 0), the frame size."""
    frames = np.frombuffer(b"".join(media.frames), dtype=np.uint8)
    ends = np.cumsum([0, *(len(f) for f in media.frames)], dtype=np.int64)
    wav = np.zeros(0, np.float32) if media.waveform is None else media.waveform
    np.savez(out, waveform=wav, has_audio=media.waveform is not None, frames=frames,
             ends=ends, size=np.array([media.height, media.width], dtype=np.int64))


def load_media(path: Path) -> Media:
    """The media :func:`save_media` wrote."""
    with np.load(path, allow_pickle=False) as z:
        raw, ends = z["frames"].tobytes(), z["ends"].tolist()
        frames = [raw[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]
        wav = z["waveform"].copy() if bool(z["has_audio"]) else None
        height, width = (int(v) for v in z["size"])
    return Media(wav, frames, height, width)


def decode_media(path: Path, quality: int = 90, fps: float = 2.0, longer: int = 360) -> Media:
    """Decode with the ffmpeg binary (argument lists, never a shell string).

    Where ``$MAVIL_MEDIA_CACHE`` names a folder holding this file's decoded media (written
    by ``python -m store.sample_store cache``), they are read from there instead: a machine
    without ffmpeg (the GPU host of .ci/gpu-checks) builds the same stores."""
    from torchvision.io import decode_jpeg, encode_jpeg

    cache = os.environ.get("MAVIL_MEDIA_CACHE")
    cached = Path(cache) / cached_name(path, quality, fps, longer) if cache else None
    if cached is not None and cached.is_file():
        return load_media(cached)

    def run(*args: str) -> subprocess.CompletedProcess:
        cmd = [ffmpeg_exe(), "-v", "error", "-nostdin", "-i", str(path), *args]
        return subprocess.run(cmd, capture_output=True, timeout=120)

    audio = run("-vn", "-ac", "1", "-ar", "16000", "-f", "f32le", "pipe:1")
    wav = np.frombuffer(audio.stdout, dtype=np.float32).copy() if audio.returncode == 0 else None
    if wav is not None and wav.size == 0:
        wav = None
    frames: list[bytes] = []
    height = width = 0
    with tempfile.TemporaryDirectory() as tmp:
        scale = f"scale='if(gte(iw,ih),{longer},-2)':'if(gte(iw,ih),-2,{longer})'"
        video = run("-an", "-vf", f"fps={fps},{scale}", "-q:v", "2", os.path.join(tmp, "%05d.jpg"))
        names = sorted(os.listdir(tmp)) if video.returncode == 0 else []
        for name in names:
            raw = Path(tmp, name).read_bytes()
            img = decode_jpeg(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
            height, width = int(img.shape[1]), int(img.shape[2])
            frames.append(encode_jpeg(img, quality=quality).numpy().tobytes())
    return Media(wav, frames, height, width)


def clip_record(
    media: Media, clip_id: str, start: float, labels: list[int], spec: Any, seconds: float = 10.0
) -> Any:
    """A ClipRecord for the window [start, start + seconds) of decoded media."""
    from store.fbank import compute_fbank
    from store.records import ClipRecord

    rec = ClipRecord(
        clip_id=clip_id,
        source_id=clip_id.split("_")[0],
        start=start,
        end=start + seconds,
        uri=f"file:{clip_id}",
        split="train",
        labels=labels,
    )
    dur = 0.0
    if media.waveform is not None:
        wav = media.waveform[int(start * 16000) : int((start + seconds) * 16000)]
        if wav.size >= 400:
            fb, n = compute_fbank(wav, spec)
            rec.fbank, rec.audio_frames, rec.has_audio = fb.astype(np.float16), n, True
            dur = wav.size / 16000
    i0 = int(round(start * spec.frame_rate))
    frames = media.frames[i0 : i0 + spec.num_frames]
    if frames:
        rec.frames, rec.height, rec.width, rec.has_video = frames, media.height, media.width, True
        dur = max(dur, len(frames) / spec.frame_rate)
    if rec.fbank is None:  # the writer stores an fbank slot for every ok clip
        rec.fbank = np.zeros((spec.target_frames, spec.num_mel_bins), dtype=np.float16)
    rec.duration = dur
    return rec


def build_sample_store(
    path: str | Path,
    media_dir: Path,
    backend: str = "zarr",
    plan: list[tuple[str, float]] | None = None,
    shards: int = 4,
    num_classes: int = 5,
    decoded: dict[str, Media] | None = None,
) -> str:
    """Build a small real store from the shared media (tests and the benchmark use it).

    ``decoded``: media already decoded by :func:`decode_media`, by file name (a cache)."""
    import pyarrow as pa

    from store import StoreSpec, create_store

    plan = SAMPLE_PLAN if plan is None else plan
    spec = StoreSpec(backend=backend, shard_size=max(1, -(-len(plan) // shards)))
    vocab = pa.table(
        {
            "index": list(range(num_classes)),
            "mid": [f"/m/test{i}" for i in range(num_classes)],
            "display_name": [f"class {i}" for i in range(num_classes)],
        }
    )
    decoded = dict(decoded or {})
    for name, _ in plan:
        if name not in decoded:
            decoded[name] = decode_media(media_dir / name, spec.jpeg_quality)
    records = []
    for k, (name, start) in enumerate(plan):
        pair = {k % num_classes, (k * 3 + 1) % num_classes}
        labels = sorted(pair if k % 3 else {k % num_classes})
        clip_id = f"{Path(name).stem}_{k:03d}_{int(start * 10):04d}"
        records.append(clip_record(decoded[name], clip_id, start, labels, spec))
    # normalisation stats over the real fbank frames, as the pipeline computes for a store
    real = np.concatenate(
        [r.fbank[: r.audio_frames].astype(np.float64) for r in records if r.has_audio]
    )
    spec.stats = {
        "fbank_mean": float(real.mean()),
        "fbank_std": float(real.std()),
        "n_clips": len(records),
        "split": "train",
    }
    writer = create_store(str(path), spec, vocab)
    per = spec.shard_size
    for s in range(shards):
        part = records[s * per : (s + 1) * per]
        if part:
            writer.write_shard(s, part)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    """``cache OUT``: the shared media decoded, for $MAVIL_MEDIA_CACHE on a machine without
    ffmpeg; ``build OUT --clips N``: a loader-benchmark store of N audio+video clips."""
    import argparse

    from store.spec import DEFAULT_JPEG_QUALITY

    p = argparse.ArgumentParser(prog="python -m store.sample_store")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="decode the shared media into OUT (.npz per file)")
    c.add_argument("out", type=Path)
    b = sub.add_parser("build", help="a store of --clips audio+video clips at OUT")
    b.add_argument("out", type=Path)
    b.add_argument("--clips", type=int, default=64)
    b.add_argument("--backend", choices=("zarr", "hdf5"), default="zarr")
    for q in (c, b):
        q.add_argument("--media", type=Path, default=None, help="media dir (default: shared)")
    a = p.parse_args(argv)
    media_dir = a.media or default_media_dir()
    if a.cmd == "build":
        plan = av_plan(a.clips)[: a.clips]
        print(build_sample_store(a.out, media_dir, a.backend, plan, shards=max(1, len(plan) // 8)))
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    names = sorted({name for name, _ in SAMPLE_PLAN} | set(AV_MEDIA))
    # quality 90: the test fixtures' decode; the spec's default: build_sample_store's
    qualities = sorted({90, DEFAULT_JPEG_QUALITY})
    for quality in qualities:
        for name in names:
            save_media(decode_media(media_dir / name, quality), a.out / cached_name(
                media_dir / name, quality))
    print(f"{len(names)} media x JPEG quality {qualities} -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
