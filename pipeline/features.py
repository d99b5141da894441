"""Decoded media -> store features: Kaldi fbank (store.fbank) and JPEG frames.

Short clips, clips without audio and clips without video keep what exists and are
flagged (has_audio / has_video / duration); the fbank of a clip without audio is all
zeros with ``audio_frames == 0``.
"""

from __future__ import annotations

import io

import numpy as np

from pipeline.decode import Decoded
from pipeline.manifest import ClipSpec
from store import ClipRecord, StoreSpec

JPEG_ENCODERS = ("pil", "torchvision", "ffmpeg")


def encode_jpegs(frames: list[np.ndarray], quality: int, encoder: str = "pil") -> list[bytes]:
    """RGB uint8 [H, W, 3] frames -> baseline JPEG bytes at ``quality`` (4:2:0)."""
    if encoder == "torchvision":
        import torch
        from torchvision.io import encode_jpeg

        if not frames:
            return []
        batch = [torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1) for f in frames]
        return [bytes(t.numpy().tobytes()) for t in encode_jpeg(batch, quality=quality)]
    from PIL import Image

    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f, "RGB").save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def empty_fbank(spec: StoreSpec) -> np.ndarray:
    return np.zeros((spec.target_frames, spec.num_mel_bins), dtype=np.float16)


def audio_features(audio: np.ndarray | None, spec: StoreSpec
                   ) -> tuple[np.ndarray, int, np.ndarray | None]:
    """(float16 fbank [target_frames, mel], real frames, int16 waveform or None).
    Audio shorter than one analysis window counts as no audio."""
    window = int(spec.sample_rate * float(spec.fbank["frame_length_ms"]) / 1000.0)
    if audio is None or len(audio) < window:
        return empty_fbank(spec), 0, None
    from store.fbank import compute_fbank  # NumPy only

    fbank, n = compute_fbank(audio, spec)
    wav = None
    if spec.store_waveform:
        wav = np.round(audio[: spec.clip_samples] * 32767.0).astype(np.int16)
    return fbank.astype(np.float16), n, wav


def video_features(decoded: Decoded, spec: StoreSpec, encoder: str = "pil") -> list[bytes]:
    """JPEG frames (<= num_frames): ffmpeg's MJPEG as is, or raw frames encoded here."""
    if decoded.jpegs:
        return list(decoded.jpegs)[: spec.num_frames]
    return encode_jpegs(decoded.frames[: spec.num_frames], spec.jpeg_quality, encoder)


def assemble_record(clip: ClipSpec, uri: str, decoded: Decoded, spec: StoreSpec,
                    audio: tuple[np.ndarray, int, np.ndarray | None], jpegs: list[bytes]
                    ) -> ClipRecord:
    fbank, n, wav = audio
    rec = ClipRecord(clip_id=clip.clip_id, source_id=clip.source_id, start=clip.start,
                     end=clip.end, uri=uri, split=clip.split, labels=list(clip.labels),
                     fbank=fbank, audio_frames=n, has_audio=n > 0, waveform=wav,
                     frames=jpegs, has_video=bool(jpegs))
    if jpegs:
        rec.width, rec.height = decoded.width, decoded.height
    if decoded.audio is not None and len(decoded.audio):
        rec.duration = round(len(decoded.audio) / spec.sample_rate, 4)
    else:
        rec.duration = round(len(jpegs) / spec.frame_rate, 4)
    return rec


def record_from_decoded(clip: ClipSpec, uri: str, decoded: Decoded, spec: StoreSpec,
                        encoder: str = "pil") -> ClipRecord:
    """Build the ok ClipRecord of one decoded clip."""
    return assemble_record(clip, uri, decoded, spec, audio_features(decoded.audio, spec),
                           video_features(decoded, spec, encoder))


def failed_record(clip: ClipSpec, status: str, reason: str, uri: str | None = None
                  ) -> ClipRecord:
    return ClipRecord(clip_id=clip.clip_id, source_id=clip.source_id, start=clip.start,
                      end=clip.end, uri=uri or clip.uri, split=clip.split,
                      labels=list(clip.labels), status=status, error=reason[:500])
