"""What a manifest row asks for (ClipSpec), row rejection, and the rejects report.

Every row of every manifest either becomes a ClipSpec or a Reject with a reason; a bad row
never stops a job. Clip ids are data, never paths: ``safe_clip_id`` is the single gate.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

# YouTube video ids: 11 characters of [A-Za-z0-9_-].
YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
# Any other clip id: a conservative file-name-safe alphabet, no leading dot.
CLIP_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.=-]{0,199}$")

# Reasons a manifest row is rejected (the rejects report's ``reason`` column).
REJECT_REASONS = ("bad_id", "bad_time", "unknown_label", "no_labels", "duplicate_id",
                  "column_count", "bad_split", "bad_uri", "bad_encoding", "bad_row")
# A time is a plain decimal number: no "1_0" (Python's float() reads it as 10), no "inf",
# no non-ASCII digits.
_NUMBER = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$", re.ASCII)
# Windows: at least one fbank analysis window, at most the store's clip length plus this
# tolerance (longer ones would be decoded whole and then cut; a 1-hour window cost 3.2 GB).
MIN_WINDOW_S = 0.025
WINDOW_TOLERANCE_S = 1.0


@dataclass
class ClipSpec:
    """One clip a manifest asks for; becomes exactly one index row."""

    clip_id: str
    source_id: str
    start: float
    end: float
    uri: str
    labels: list[int] = field(default_factory=list)
    split: str = "train"


@dataclass
class Reject:
    """A manifest row that did not become a ClipSpec, and why."""

    file: str
    line: int
    raw_id: str
    reason: str
    detail: str


class RowError(ValueError):
    """Raised by row parsers; carries a reject reason code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class TextLines:
    """A file's lines as text, decoded one line at a time (UTF-8, a leading BOM dropped),
    so that one undecodable byte rejects one line: that line is yielded empty (csv
    readers skip it; line numbers stay right) and recorded in ``bad`` as
    ``(line, detail)``."""

    def __init__(self, path: str | Path):
        self.path = path
        self.bad: list[tuple[int, str]] = []

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    self.bad.append((lineno, f"not UTF-8: byte 0x{raw[err.start]:02x} at "
                                             f"column {err.start + 1}"))
                    yield "\n"


def safe_clip_id(clip_id: str) -> bool:
    """True when ``clip_id`` can name a file inside a directory and nothing else."""
    return bool(CLIP_ID.match(clip_id)) and ".." not in clip_id


def check_youtube_id(ytid: str) -> str:
    ytid = ytid.strip()
    if not YOUTUBE_ID.match(ytid):
        raise RowError("bad_id", f"not a YouTube id: {ytid!r}")
    return ytid


def _seconds(value: object, start: object, end: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):  # Parquet numbers
        t = float(value)
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        t = float(value.strip())
    else:
        raise RowError("bad_time", f"not a number: {start!r}, {end!r}")
    if not math.isfinite(t):
        raise RowError("bad_time", f"non-finite time: {start!r}, {end!r}")
    return t


def parse_times(start: object, end: object | None, clip_seconds: float) -> tuple[float, float]:
    """Parse [start, end) in seconds; reject non-numbers, negatives, reversed windows and
    windows shorter than ``MIN_WINDOW_S`` or longer than ``clip_seconds`` +
    ``WINDOW_TOLERANCE_S`` (the store keeps ``clip_seconds`` per clip)."""
    s = _seconds(start, start, end)
    e = s + clip_seconds if end is None or str(end).strip() == "" else _seconds(end, start, end)
    if s < 0 or e < 0:
        raise RowError("bad_time", f"negative time: {s}, {e}")
    if e <= s:
        raise RowError("bad_time", f"end {e} <= start {s}")
    if e - s < MIN_WINDOW_S:
        raise RowError("bad_time", f"window of {e - s:g} s is shorter than {MIN_WINDOW_S} s")
    if e - s > clip_seconds + WINDOW_TOLERANCE_S:
        raise RowError("bad_time", f"window of {e - s:g} s is longer than the store's "
                       f"{clip_seconds:g}-s clips (+{WINDOW_TOLERANCE_S:g} s)")
    return s, e


def format_seconds(t: float) -> str:
    """30.0 -> '30', 30.5 -> '30.5' (for clip ids such as ``{ytid}_{start}``)."""
    return str(int(t)) if float(t).is_integer() else f"{t:.3f}".rstrip("0")


class ManifestBuilder:
    """Collects ClipSpecs and Rejects; enforces unique ids across all given files."""

    def __init__(self) -> None:
        self.specs: list[ClipSpec] = []
        self.rejects: list[Reject] = []
        self._seen: dict[str, tuple[str, int]] = {}

    def add(self, spec: ClipSpec, file: str, line: int) -> None:
        if not safe_clip_id(spec.clip_id):
            self.reject(file, line, spec.clip_id, "bad_id", "clip id is not a safe name")
            return
        if spec.clip_id in self._seen:
            f0, l0 = self._seen[spec.clip_id]
            self.reject(file, line, spec.clip_id, "duplicate_id", f"first seen at {f0}:{l0}")
            return
        self._seen[spec.clip_id] = (file, line)
        self.specs.append(spec)

    def reject(self, file: str, line: int, raw_id: str, reason: str, detail: str) -> None:
        self.rejects.append(Reject(file, line, raw_id, reason, detail))

    def limit(self, n: int | None) -> None:
        if n is not None:
            self.specs = self.specs[:n]


def reject_counts(rejects: list[Reject]) -> dict[str, int]:
    return dict(sorted(Counter(r.reason for r in rejects).items()))


def write_rejects(rejects: list[Reject], path: Path) -> None:
    """Write ``path`` (.csv) and a .json twin: one row per rejected manifest row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "line", "raw_id", "reason", "detail"])
        for r in rejects:
            w.writerow([r.file, r.line, r.raw_id, r.reason, r.detail])
    path.with_suffix(".json").write_text(
        json.dumps({"counts": reject_counts(rejects), "rows": [asdict(r) for r in rejects]},
                   indent=1))


def vocabulary_table(names: list[str], mids: list[str] | None = None) -> pa.Table:
    """The store's label vocabulary: index, mid, display_name."""
    return pa.table({
        "index": pa.array(range(len(names)), pa.int32()),
        "mid": pa.array(mids if mids is not None else names, pa.string()),
        "display_name": pa.array(names, pa.string()),
    })


def shard_plan(specs: list[ClipSpec], shard_size: int) -> list[list[ClipSpec]]:
    """Deterministic shard assignment: manifest order, consecutive chunks of shard_size."""
    return [specs[i:i + shard_size] for i in range(0, len(specs), shard_size)]
