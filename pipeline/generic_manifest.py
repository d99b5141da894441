"""A generic manifest: CSV (with header) or Parquet with columns
``id, uri, start, end, labels, split``.

``start``/``end`` may be empty (start 0, end start + clip_seconds). ``labels`` is a list
(Parquet) or a ``,``/``;``-joined string of names, mids or integer indices. With a
vocabulary (``--labels`` CSV ``index,mid,display_name``) names and mids must be in it;
without one, the vocabulary is the sorted set of names in the whole file.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.manifest import ClipSpec, ManifestBuilder, RowError, parse_times, vocabulary_table

COLUMNS = ("id", "uri", "start", "end", "labels", "split")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _label_tokens(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [t.strip() for t in re.split(r"[;,]", str(value)) if t.strip()]


def read_rows(path: str | Path) -> tuple[list[tuple[int, dict | None, int]], list[str]]:
    """(line, row-dict or None when the column count is wrong, n fields), header."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pq.read_table(path)
        header = table.column_names
        return [(i + 2, r, len(header)) for i, r in enumerate(table.to_pylist())], header
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        rows = []
        for i, fields in enumerate(reader, start=2):
            if not fields:
                continue
            ok = len(fields) == len(header)
            rows.append((i, dict(zip(header, fields, strict=False)) if ok else None, len(fields)))
    return rows, header


def generic_vocabulary(path: str | Path) -> pa.Table:
    rows, _ = read_rows(path)
    names = {t for _, r, _ in rows if r for t in _label_tokens(r.get("labels"))
             if not t.isdigit()}
    return vocabulary_table(sorted(names))


def _label_indices(tokens: list[str], lookup: dict[str, int], n: int) -> list[int]:
    out = []
    for t in tokens:
        if t.isdigit() and int(t) < n:
            out.append(int(t))
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
    for line, row, nfields in rows:
        raw_id = str(row.get("id", "")) if row else ""
        try:
            if row is None:
                raise RowError("column_count", f"expected {len(header)} columns, got {nfields}")
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
