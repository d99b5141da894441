"""VGGSound's ``vggsound.csv``: no header, ``youtube_id,start_seconds,label,split``.

Labels containing commas are quoted. Clips are 10 s from ``start``. The vocabulary is the
sorted set of label names of the whole file (309/310 classes), so it does not depend on
``--limit`` or on rejected rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa

from pipeline.manifest import (
    ClipSpec,
    ManifestBuilder,
    RowError,
    check_youtube_id,
    format_seconds,
    parse_times,
    vocabulary_table,
)

SPLITS = ("train", "test")


def _rows(path: str | Path) -> list[tuple[int, list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [(i, r) for i, r in enumerate(csv.reader(f), start=1) if r]


def vggsound_vocabulary(path: str | Path) -> pa.Table:
    names = sorted({r[2].strip() for _, r in _rows(path) if len(r) == 4 and r[2].strip()})
    return vocabulary_table(names)


def read_vggsound(path: str | Path, vocabulary: pa.Table, builder: ManifestBuilder,
                  clip_seconds: float = 10.0) -> ManifestBuilder:
    name_index = {n: i for i, n in enumerate(vocabulary.column("display_name").to_pylist())}
    fname = Path(path).name
    for lineno, row in _rows(path):
        raw_id = row[0] if row else ""
        try:
            if len(row) != 4:
                raise RowError("column_count", f"expected 4 columns, got {len(row)}")
            ytid = check_youtube_id(row[0])
            start, end = parse_times(row[1], None, clip_seconds)
            label = row[2].strip()
            if label not in name_index:
                raise RowError("unknown_label", f"unknown label {label!r}")
            split = row[3].strip()
            if split not in SPLITS:
                raise RowError("bad_split", f"split {split!r} not in {SPLITS}")
        except RowError as err:
            builder.reject(fname, lineno, raw_id, err.reason, err.detail)
            continue
        clip_id = f"{ytid}_{format_seconds(start)}"
        builder.add(ClipSpec(clip_id, ytid, start, end, f"youtube:{ytid}", [name_index[label]],
                             split), fname, lineno)
    return builder
