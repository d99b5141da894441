"""Concatenate generic manifests (``id,uri,start,end,labels,split`` CSVs) into one, so that
one ``pipeline build`` makes one store from several sources (the demo: the bundled sample
clips plus the generated labelled set).

A relative local ``uri`` is made absolute against its own manifest's folder (the rule
``pipeline build`` applies), so the merged file can live anywhere. A clip id seen twice is
an error, not a silent overwrite. The output appears whole or not at all (temp + rename).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

COLUMNS = ("id", "uri", "start", "end", "labels", "split")


def _absolute(uri: str, base: Path) -> str:
    if "://" in uri or ":" in uri.split("/")[0] or uri.startswith("/"):
        return uri
    return str((base / uri).resolve())


def merge_manifests(paths: list[str | Path], out: str | Path) -> int:
    rows: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for path in map(Path, paths):
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("id", "uri") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}")
            base = path.resolve().parent
            for row in reader:
                cid = (row.get("id") or "").strip()
                if cid in seen:
                    raise ValueError(f"clip id {cid!r} is in both {seen[cid]} and {path}")
                seen[cid] = str(path)
                row = {c: (row.get(c) or "").strip() for c in COLUMNS}
                row["uri"] = _absolute(row["uri"], base)
                rows.append(row)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return len(rows)
