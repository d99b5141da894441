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


_NUMBER = (int, float)
# what each store.json field must hold (checked on open: a wrong type is named, not a
# TypeError deep in a reader); "positive" numbers must be > 0
FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema_version": ((int,), False), "backend": ((str,), False),
    "sample_rate": ((int,), True), "fbank": ((dict,), False),
    "clip_seconds": (_NUMBER, True), "frame_rate": (_NUMBER, True),
    "num_frames": ((int,), True), "resize_longer_side": ((int,), True),
    "jpeg_quality": ((int,), True), "store_waveform": ((bool,), False),
    "fbank_compression": ((str,), False), "shard_size": ((int,), True),
    "stats": ((dict,), False), "vocabulary": ((dict,), False),
    "audio": ((dict,), False),
}
FBANK_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {
    "num_mel_bins": ((int,), True), "frame_length_ms": (_NUMBER, True),
    "frame_shift_ms": (_NUMBER, True), "window_type": ((str,), False),
    "dither": (_NUMBER, False), "htk_compat": ((bool,), False),
    "use_energy": ((bool,), False), "remove_dc_offset": ((bool,), False),
    "preemphasis_coefficient": (_NUMBER, False), "target_frames": ((int,), True),
}


def _check_field(source: str, key: str, value: Any, rule: tuple[tuple[type, ...], bool]
                 ) -> None:
    types, positive = rule
    is_bool = isinstance(value, bool)
    if not isinstance(value, types) or (is_bool and bool not in types):
        want = " or ".join(t.__name__ for t in types)
        raise StoreError(f"{source}: field {key!r} must be {want}, got {value!r}; fix the "
                         "file or re-create the store")
    if positive and not value > 0:
        raise StoreError(f"{source}: field {key!r} must be > 0, got {value!r}")


def default_audio() -> dict[str, Any]:
    """How the waveform that feeds the fbank is made (recorded, never interpreted).

    Keep these texts as they are: create_store compares the whole spec, so a changed word
    would make every existing store refuse to resume (tests/test_store_conformance.py
    holds a store.json of 2026-12-01). The fbank values are that call's, computed by store/fbank.py
    in NumPy (equal up to float32 rounding)."""
    return {
        "resampler": "ffmpeg -ac 1 -ar 16000 -f f32le (libswresample, ffmpeg defaults)",
        "mean_removed": True,
        "fbank_call": "torchaudio.compliance.kaldi.fbank(wave - wave.mean(), "
                      "htk_compat=True, sample_frequency=16000, use_energy=False, "
                      "window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10, "
                      "frame_length=25, remove_dc_offset=True, preemphasis_coefficient=0.97)"
                      " then zero-pad or cut to target_frames (store/fbank.py)",
        "constant_mel_channel": 3,
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
    audio: dict[str, Any] = field(default_factory=default_audio)

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
        for key, value in data.items():
            _check_field(source, key, value, FIELD_TYPES[key])
        fbank = data.get("fbank", {})
        bad = sorted(set(fbank) - set(FBANK_TYPES))
        if bad:
            raise StoreError(f"{source}: field 'fbank' has unknown keys {bad}")
        for key, value in fbank.items():
            _check_field(source, f"fbank.{key}", value, FBANK_TYPES[key])
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
