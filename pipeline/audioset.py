"""AudioSet segment CSVs (official and re-saved forms) and class_labels_indices.csv.

Official form: three ``#`` comment lines, ``, `` separators, quoted comma-joined mids::

    # YTID, start_seconds, end_seconds, positive_labels
    --PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"

Re-saved form: a plain ``YTID,start_seconds,end_seconds,positive_labels`` header. Rows
that went through a spreadsheet may have their label list split across extra columns
(the quoted list becomes several columns plus trailing commas): the pieces are re-joined
when each is a label id; anything else in extra columns is a ``column_count`` reject. An id starting
with ``#`` but not ``# `` (e.g. ``#NAME?``) is a data row with a bad id, not a comment.
A line that is not UTF-8 (``bad_encoding``) or that csv cannot read (``bad_row``, e.g. a
field over 131,072 characters) is rejected with its line number; the file goes on.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa

from pipeline.manifest import (
    ClipSpec,
    ManifestBuilder,
    RowError,
    TextLines,
    check_youtube_id,
    format_seconds,
    parse_times,
    vocabulary_table,
)


def read_class_labels(path: str | Path) -> pa.Table:
    """``index,mid,display_name`` -> vocabulary table (indices must be 0..n-1 in order)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if int(row["index"]) != i:
            raise ValueError(f"{path}: index column not 0..n-1 at row {i + 2}")
    return vocabulary_table([r["display_name"] for r in rows], [r["mid"] for r in rows])


def _is_comment(line: str) -> bool:
    s = line.lstrip()
    return s == "#" or s.startswith("# ")


def _labels(fields: list[str]) -> list[str]:
    pieces: list[str] = []
    for field_ in fields:
        for piece in field_.split(","):
            piece = piece.strip().strip('"').strip()
            if piece:
                pieces.append(piece)
    for p in pieces:
        if not p.startswith("/"):
            raise RowError("column_count", f"unexpected extra column {p!r}")
    return pieces


def parse_segment_row(fields: list[str], mid_index: dict[str, int]) -> tuple[str, float, float,
                                                                                list[int]]:
    """One data row -> (ytid, start, end, label indices); raises RowError."""
    while fields and fields[-1].strip() == "":
        fields = fields[:-1]
    if len(fields) < 4:
        raise RowError("column_count", f"expected 4 columns, got {len(fields)}")
    ytid = check_youtube_id(fields[0])
    start, end = parse_times(fields[1], fields[2], 10.0)
    mids = _labels(fields[3:])
    if not mids:
        raise RowError("no_labels", "empty positive_labels")
    unknown = [m for m in mids if m not in mid_index]
    if unknown:
        raise RowError("unknown_label", f"unknown label id(s): {','.join(unknown)}")
    return ytid, start, end, sorted({mid_index[m] for m in mids})


def split_name(path: str | Path) -> str:
    name = Path(path).name.lower()
    return "eval" if "eval" in name else "train"


def read_segments(paths: list[str | Path], vocabulary: pa.Table, builder: ManifestBuilder,
                  splits: list[str] | None = None) -> ManifestBuilder:
    """Read AudioSet segment CSVs into ``builder`` (ClipSpecs + Rejects).

    The split is taken from ``splits`` or guessed from the file name (``eval`` -> eval,
    otherwise train). The clip id is ``{ytid}_{start}``; the uri ``youtube:{ytid}``.
    """
    mid_index = {m: i for i, m in enumerate(vocabulary.column("mid").to_pylist())}
    for k, path in enumerate(paths):
        split = splits[k] if splits else split_name(path)
        name = Path(path).name
        text = TextLines(path)
        for lineno, line in enumerate(text, start=1):
            line = line.rstrip("\r\n")
            if text.bad and text.bad[-1][0] == lineno:
                builder.reject(name, lineno, "", "bad_encoding", text.bad[-1][1])
                continue
            if not line.strip() or _is_comment(line):
                continue
            try:
                fields = next(csv.reader([line], skipinitialspace=True))
            except csv.Error as err:
                builder.reject(name, lineno, line[:20], "bad_row", f"unreadable CSV row: {err}")
                continue
            if fields and fields[0].strip().upper() == "YTID":
                continue  # the re-saved plain header
            raw_id = fields[0] if fields else ""
            try:
                ytid, start, end, labels = parse_segment_row(fields, mid_index)
            except RowError as err:
                builder.reject(name, lineno, raw_id, err.reason, err.detail)
                continue
            clip_id = f"{ytid}_{format_seconds(start)}"
            builder.add(ClipSpec(clip_id, ytid, start, end, f"youtube:{ytid}", labels, split),
                        name, lineno)
    return builder
