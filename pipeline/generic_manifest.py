"""A generic manifest: CSV (with header) or Parquet with columns
``id, uri, start, end, labels, split``.

``start``/``end`` may be empty (start 0, end start + clip_seconds). ``labels`` is a list
(Parquet) or a ``,``/``;``-joined string of names, mids or integer indices (ASCII digits).
With a vocabulary (``--labels`` CSV ``index,mid,display_name``) names and mids must be in
it; without one, the vocabulary is the sorted set of names in the whole file. A row that
cannot be read (not UTF-8, a field over csv's 131,072-character limit, a null id) is a
Reject with its line; the other rows go on.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.manifest import (
    ClipSpec,
    ManifestBuilder,
    RowError,
    TextLines,
    parse_times,
    vocabulary_table,
)

COLUMNS = ("id", "uri", "start", "end", "labels", "split")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _label_tokens(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [t.strip() for t in re.split(r"[;,]", str(value)) if t.strip()]


# (line, row dict or None, why it is None: a RowError, or None when all is well)
Row = tuple[int, dict[str, Any] | None, RowError | None]


def _is_number_like(token: str) -> bool:
    """'²', '٣': numeric but not an ASCII index; neither an index nor a plain name."""
    return token.isnumeric() and not token.isascii()


def read_rows(path: str | Path) -> tuple[list[Row], list[str]]:
    """Rows in line order (each a dict, or None with the RowError that rejects it), header."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pq.read_table(path)
        return [(i + 2, r, None) for i, r in enumerate(table.to_pylist())], table.column_names
    lines = TextLines(path)
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as err:
        raise ValueError(f"{path}: no readable header line ({err or 'empty file'})") from err
    if lines.bad:
        raise ValueError(f"{path}: header line {lines.bad[0][1]}")
    rows: list[Row] = []
    last = reader.line_num
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:  # e.g. a field over the 131,072-character limit
            rows.append((last + 1, None, RowError("bad_row", f"unreadable CSV row: {err}")))
            last = reader.line_num
            continue
        line, last = last + 1, reader.line_num
        if not fields:
            continue
        if len(fields) != len(header):
            rows.append((line, None, RowError("column_count", f"expected {len(header)} "
                                              f"columns, got {len(fields)}")))
        else:
            rows.append((line, dict(zip(header, fields, strict=True)), None))
    rows += [(line, None, RowError("bad_encoding", detail)) for line, detail in lines.bad]
    return sorted(rows, key=lambda r: r[0]), header


def generic_vocabulary(path: str | Path) -> pa.Table:
    rows, _ = read_rows(path)
    names = {t for _, r, _ in rows if r for t in _label_tokens(r.get("labels"))
             if not (t.isascii() and t.isdigit()) and not _is_number_like(t)}
    return vocabulary_table(sorted(names))


def _label_indices(tokens: list[str], lookup: dict[str, int], n: int) -> list[int]:
    out = []
    for t in tokens:
        if t.isascii() and t.isdigit() and int(t) < n:
            out.append(int(t))
        elif _is_number_like(t):
            raise RowError("unknown_label", f"label {t!r} is neither an index (ASCII "
                           "digits) nor a name")
        elif t in lookup:
            out.append(lookup[t])
        else:
            raise RowError("unknown_label", f"unknown label {t!r}")
    return sorted(set(out))


def read_generic(path: str | Path, vocabulary: pa.Table, builder: ManifestBuilder,
                 clip_seconds: float = 10.0, base_dir: str | Path | None = None
                 ) -> ManifestBuilder:
    """Read a generic manifest; relative local uris resolve against ``base_dir``
    (default: the manifest's folder)."""
    rows, header = read_rows(path)
    missing = [c for c in ("id", "uri") if c not in header]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}; have {header}")
    lookup = {m: i for i, m in enumerate(vocabulary.column("mid").to_pylist())}
    lookup.update({d: i for i, d in enumerate(vocabulary.column("display_name").to_pylist())})
    base = Path(base_dir) if base_dir else Path(path).resolve().parent
    fname = Path(path).name
    for line, row, error in rows:
        raw_id = str(row.get("id") or "")[:200] if row else ""
        try:
            if row is None:
                raise error or RowError("bad_row", "unreadable row")
            if row.get("id") is None or not str(row["id"]).strip():
                raise RowError("bad_id", "empty (null) id")
            clip_id = str(row["id"]).strip()
            uri = str(row.get("uri") or "").strip()
            if not uri:
                raise RowError("bad_uri", "empty uri")
            if "://" not in uri and ":" not in uri.split("/")[0] and not uri.startswith("/"):
                uri = str(base / uri)
            start, end = parse_times(row.get("start") or "0", row.get("end"), clip_seconds)
            labels = _label_indices(_label_tokens(row.get("labels")), lookup, vocabulary.num_rows)
            split = str(row.get("split") or "train").strip()
            if not _SPLIT_NAME.match(split):
                raise RowError("bad_split", f"bad split name {split!r}")
        except RowError as err:
            builder.reject(fname, line, raw_id, err.reason, err.detail)
            continue
        builder.add(ClipSpec(clip_id, clip_id, start, end, uri, labels, split), fname, line)
    return builder
