"""store.json: how the features in a store were made (StoreSpec) and its schema version.

A store built with other parameters is a different store: readers check the spec, never
guess. The fbank parameters are those of AudioMAE / MAViL (Kaldi fbank, 128 mel bins,
25 ms Hanning window, 10 ms shift, 1024 frames for a 10-s clip; MAViL supp. Sec. A).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from store.errors import StoreError

SCHEMA_VERSION = 1
STORE_JSON = "store.json"
BACKENDS = ("zarr", "hdf5")
# "none": raw float16 chunks (fastest reads). "lossless": byte-shuffle + a fast LZ codec that
# the plain libraries decode (Zarr: blosc lz4hc; HDF5: built-in shuffle + lzf), ~0.6x the
# bytes of real audio's fbank; FORMAT.md "Size" has the measured sizes and read costs.
FBANK_COMPRESSIONS = ("none", "lossless")

# 85 keeps a full 10-s clip (20 frames at 360 px + raw fbank) at ~0.56 MB on average over
# the shared video media (q90: 0.63 MB); figures in store/FORMAT.md ("Size").
DEFAULT_JPEG_QUALITY = 85


def default_fbank() -> dict[str, Any]:
    """Kaldi fbank parameters (torchaudio.compliance.kaldi.fbank keyword names)."""
    return {
        "num_mel_bins": 128,
        "frame_length_ms": 25.0,
        "frame_shift_ms": 10.0,
        "window_type": "hanning",
        "dither": 0.0,
        "htk_compat": True,
        "use_energy": False,
        "remove_dc_offset": True,
        "preemphasis_coefficient": 0.97,
        "target_frames": 1024,
    }


@dataclass
class StoreSpec:
    """Everything in store.json. ``stats`` is filled by the pipeline after a run."""

    schema_version: int = SCHEMA_VERSION
    backend: str = "zarr"
    sample_rate: int = 16000
    fbank: dict[str, Any] = field(default_factory=default_fbank)
    clip_seconds: float = 10.0
    frame_rate: float = 2.0
    num_frames: int = 20
    resize_longer_side: int = 360
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    store_waveform: bool = False
    fbank_compression: str = "none"
    shard_size: int = 1000
    stats: dict[str, Any] = field(default_factory=dict)
    vocabulary: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise StoreError(f"unknown store backend {self.backend!r}; use one of {BACKENDS}")
        if self.fbank_compression not in FBANK_COMPRESSIONS:
            raise StoreError(f"unknown fbank_compression {self.fbank_compression!r}; use one "
                             f"of {FBANK_COMPRESSIONS}")
        full = default_fbank()
        full.update(self.fbank)
        self.fbank = full

    @property
    def target_frames(self) -> int:
        return int(self.fbank["target_frames"])

    @property
    def num_mel_bins(self) -> int:
        return int(self.fbank["num_mel_bins"])

    @property
    def clip_samples(self) -> int:
        """Waveform slots per clip (clip_seconds at sample_rate)."""
        return int(round(self.clip_seconds * self.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = STORE_JSON) -> StoreSpec:
        version = data.get("schema_version")
        if not isinstance(version, int):
            raise StoreError(f"{source}: no integer schema_version; is this a feature store?")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{source}: schema version {version} is newer than this code supports "
                f"({SCHEMA_VERSION}); upgrade the store package to read it"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise StoreError(f"{source}: unknown keys {unknown} for schema version {version}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = STORE_JSON) -> StoreSpec:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StoreError(f"{source}: not valid JSON ({exc}); restore it or re-create "
                             "the store") from exc
        if not isinstance(data, dict):
            raise StoreError(f"{source}: expected a JSON object")
        return cls.from_dict(data, source)
