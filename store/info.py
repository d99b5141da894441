"""Summarise a store: clips by split and status, size on disk, bytes per clip, stats.

A damaged part of the store (an unreadable index part, a missing data file, a broken
labels.parquet) does not stop the summary of the rest: each is listed under "problems"
with what to do about it."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc

from store.backends.fs import join, resolve, size_on_disk
from store.errors import StoreError, rebuild_hint
from store.index import INDEX_DIR, LABELS_FILE, VOCAB_SCHEMA, read_index, read_vocabulary
from store.records import OK
from store.writer import read_spec


def store_info(path: str) -> dict[str, Any]:
    fs, root = resolve(path)
    spec = read_spec(fs, root)
    unreadable: dict[str, str] = {}
    index = read_index(fs, root, unreadable=unreadable)
    problems = list(unreadable.values())
    by_split: dict[str, dict[str, int]] = {}
    # use_threads=False (as in index._read_parquet): Arrow's thread pools still busy at
    # interpreter exit aborted ~7% of `pipeline info` runs with exit 134 ("terminate called
    # without an active exception", apache/arrow#34314); 0 of 100 runs since.
    groups = index.group_by(["split", "status"], use_threads=False)
    for row in groups.aggregate([("clip_id", "count")]).to_pylist():
        by_split.setdefault(row["split"], {})[row["status"]] = row["clip_id_count"]
    files = sorted({f for f in index["shard_file"].to_pylist() if f})
    data_bytes = 0
    for f in files:
        try:
            data_bytes += size_on_disk(fs, join(root, f))
        except FileNotFoundError:
            shard = int(f.split("/")[-1].split("-")[0])
            problems.append(f"shard data file {f} is missing; {rebuild_hint(shard)}; "
                            "`pipeline verify` checks every shard")
    index_bytes = size_on_disk(fs, join(root, INDEX_DIR)) if fs.exists(join(root, INDEX_DIR)) \
        else 0
    n_ok = int(pc.sum(pc.equal(index["status"], OK)).as_py() or 0)
    try:
        vocab = read_vocabulary(fs, root)
    except StoreError as exc:
        problems.append(str(exc))
        vocab = VOCAB_SCHEMA.empty_table()
    return {
        "path": str(path), "schema_version": spec.schema_version, "backend": spec.backend,
        "clips": index.num_rows, "ok": n_ok, "failed": index.num_rows - n_ok,
        "shards": len(set(index["shard"].to_pylist())), "shard_files": len(files),
        "by_split": by_split, "data_bytes": data_bytes, "index_bytes": index_bytes,
        "labels_bytes": size_on_disk(fs, join(root, LABELS_FILE))
        if fs.exists(join(root, LABELS_FILE)) else 0,
        "bytes_per_clip": data_bytes / n_ok if n_ok else 0.0,
        "num_classes": vocab.num_rows, "stats": spec.stats, "spec": spec.to_dict(),
        "problems": problems,
    }


def human_bytes(n: float) -> str:
    """1234567 -> "1.23 MB" (decimal units, as disk and object-store bills count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 1000 else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_info(info: dict[str, Any]) -> str:
    """The `pipeline info` text: one labelled line per topic, one line per split."""
    spec = info["spec"]
    lines = [
        f"store      {info['path']}",
        f"schema     v{info['schema_version']}, backend {info['backend']}",
        f"features   fbank {spec['fbank']['num_mel_bins']} mel x "
        f"{spec['fbank']['target_frames']} frames @ {spec['sample_rate']} Hz "
        f"(compression {spec['fbank_compression']}); "
        f"{spec['num_frames']} frames @ {spec['frame_rate']} fps, longer side "
        f"{spec['resize_longer_side']}, JPEG q{spec['jpeg_quality']}; waveform "
        f"{'yes' if spec['store_waveform'] else 'no'}",
        f"clips      {info['clips']} ({info['ok']} ok, {info['failed']} failed) in "
        f"{info['shards']} shards",
    ]
    for split, statuses in sorted(info["by_split"].items()):
        total = sum(statuses.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        lines.append(f"  {split or '(none)':<10} {total} clips: {parts}")
    lines.append(f"size       {human_bytes(info['data_bytes'])} shard data, "
                 f"{human_bytes(info['index_bytes'])} index; "
                 f"{human_bytes(info['bytes_per_clip'])} per ok clip")
    name = spec["vocabulary"].get("name")
    lines.append(f"labels     {info['num_classes']} classes" + (f" ({name})" if name else ""))
    stats = info["stats"]
    lines.append("stats      " + (", ".join(f"{k}={_value(v)}" for k, v in sorted(stats.items()))
                                  if stats else "(none yet: run `pipeline stats STORE`)"))
    lines += [f"PROBLEM    {p}" for p in info.get("problems", [])]
    return "\n".join(lines)
