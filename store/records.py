"""What goes into a store (ClipRecord, from the pipeline) and what comes out (Clip).

Every manifest clip becomes exactly one ClipRecord and one index row, with features
(status "ok") or with a failure status and a human-readable reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: writers need no torch
    import torch

OK = "ok"
FAILURE_STATUSES = (
    "not_found", "timeout", "too_large", "decode_error", "no_streams", "bad_media",
    "download_error", "bad_manifest", "error",
)


@dataclass
class ClipRecord:
    """One manifest clip after processing; the writer turns it into one index row."""

    clip_id: str
    source_id: str
    start: float
    end: float
    uri: str
    split: str
    labels: list[int]
    status: str = OK
    error: str = ""
    fbank: np.ndarray | None = None  # float16 [target_frames, num_mel_bins], raw log-mel
    audio_frames: int = 0  # real fbank frames before pad/cut
    frames: list[bytes] = field(default_factory=list)  # JPEG bytes, len <= num_frames
    height: int = 0
    width: int = 0
    waveform: np.ndarray | None = None  # int16 at the store's sample rate
    duration: float = 0.0  # real decoded duration in seconds
    has_audio: bool = False
    has_video: bool = False

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class Clip:
    """One clip read back from a store."""

    clip_id: str
    labels: list[int]
    fbank: torch.Tensor  # float16 [target_frames, num_mel_bins], raw log-mel
    audio_frames: int
    frames: list[bytes]  # JPEG bytes, one per stored frame
    height: int
    width: int
    duration: float
    has_audio: bool
    has_video: bool
    waveform: torch.Tensor | None = None  # int16 [samples] when the store keeps it
    index: int = -1  # row number in Store.index()
    split: str = ""

    def decode_frames(self) -> torch.Tensor:
        """All stored frames as uint8 [n, 3, H, W] (n may be 0)."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        if not self.frames:
            return torch.zeros((0, 3, self.height, self.width), dtype=torch.uint8)
        datas = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in self.frames]
        images = decode_jpeg(datas, mode=ImageReadMode.RGB)
        return torch.stack(images)


def clip_checksum(fbank: bytes, frames: Iterable[bytes], waveform: bytes = b"") -> str:
    """blake2b-128 (hex) over fbank bytes, then each JPEG in order, then waveform bytes.

    fbank bytes are float16 little-endian C order [target_frames, num_mel_bins]; waveform
    bytes are int16 little-endian, only the real samples (index column audio_samples).
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(fbank)
    for jpeg in frames:
        h.update(jpeg)
    h.update(waveform)
    return h.hexdigest()
