"""Re-check a store: every index part, every shard file, every clip's checksum.

Problems (corruption, missing shards, index/shard mismatches, a damaged labels.parquet)
make verify fail and are named one by one. Orphans -- data files no index part names,
left by killed writers or superseded commits -- are harmless garbage; they are listed and,
with fix=True, removed once older than the grace period (a superseded file counts from
when it was replaced). A data file whose own index part is damaged is never an orphan.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from store.backends import get_backend
from store.backends.fs import (
    abort_upload,
    join,
    newest_mtime,
    pending_uploads,
    remove,
    resolve,
)
from store.errors import StoreError, rebuild_hint
from store.index import (
    DATA_NAME_RE,
    INDEX_DIR,
    LABELS_FILE,
    PART_RE,
    SHARDS_DIR,
    check_shard_file,
    list_parts,
    part_name,
    read_part,
    read_vocabulary,
    superseded_files,
)
from store.records import OK, clip_checksum
from store.writer import read_spec

BATCH = 32  # clips read per backend call


@dataclass
class VerifyReport:
    path: str
    shards: int = 0
    clips: int = 0
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # data files of damaged index parts
    superseded: dict[str, float] = field(default_factory=dict)  # replaced file -> when
    uploads: list[str] = field(default_factory=list)  # S3: unfinished multipart uploads
    aborted: list[str] = field(default_factory=list)  # ... of them aborted by fix

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"{self.path}: {self.shards} shards, {self.clips} clips, "
                 f"{self.checked} checksums verified, {len(self.problems)} problems, "
                 f"{len(self.orphans)} orphan files"]
        lines += [f"  PROBLEM {p}" for p in self.problems]
        lines += [f"  orphan {o}" + (" (removed)" if o in self.removed else
                                     " (replaced by a re-run; kept for older readers until "
                                     "the grace period has passed)" if o in self.superseded
                                     else "")
                  for o in self.orphans]
        lines += [f"  unfinished upload {u}" + (" (aborted)" if u in self.aborted else "")
                  for u in self.uploads]
        lines += [f"  kept {k} (its index part is damaged; see the PROBLEM above)"
                  for k in self.kept]
        return "\n".join(lines)


def verify_store(path: str, fix: bool = False, grace_seconds: float = 3600.0,
                 progress: bool = True) -> VerifyReport:
    """Check everything; with ``fix``, delete orphans older than ``grace_seconds`` (a
    younger one may belong to a writer still running)."""
    fs, root = resolve(path)
    report = VerifyReport(path=str(path))
    try:
        spec = read_spec(fs, root)
    except StoreError as exc:
        report.problems.append(str(exc))
        return report
    backend = get_backend(spec.backend)
    parts = list_parts(fs, root)
    report.shards = len(parts)
    tables, damaged = {}, set()
    for shard_id, part in parts.items():
        try:
            tables[shard_id] = read_part(fs, part)
        except StoreError as exc:
            report.problems.append(str(exc))
            damaged.add(shard_id)
    _check_labels(fs, root, spec, tables, report)
    counts = Counter(cid for t in tables.values() for cid in t["clip_id"].to_pylist())
    report.clips = sum(counts.values())
    dups = sorted(c for c, k in counts.items() if k > 1)
    if dups:
        report.problems.append(f"clip ids in more than one row: {dups[:10]}")
    named = set()
    total_ok = sum(sum(1 for s in t["status"].to_pylist() if s == OK) for t in tables.values())
    bar = tqdm(total=total_ok, desc="verify", unit="clip", disable=not progress)
    for shard_id, table in tables.items():
        rows = table.to_pylist()
        files = {r["shard_file"] for r in rows if r["shard_file"]}
        named |= files
        _check_shard(fs, root, backend, spec, shard_id, parts[shard_id], rows, report, bar)
    bar.close()
    superseded = {f: t for table in tables.values() for f, t in superseded_files(table).items()}
    report.superseded = superseded
    _find_orphans(fs, root, named, superseded, damaged, report, fix, grace_seconds)
    _find_uploads(fs, root, report, fix, grace_seconds)
    return report


def _check_labels(fs: Any, root: str, spec: Any, tables: dict[int, Any],
                  report: VerifyReport) -> None:
    """labels.parquet readable, its size = store.json's num_classes, every label in it."""
    try:
        vocab = read_vocabulary(fs, root)
    except StoreError as exc:
        report.problems.append(str(exc))
        return
    if not fs.exists(join(root, LABELS_FILE)):
        return
    want = spec.vocabulary.get("num_classes")
    if isinstance(want, int) and want != vocab.num_rows:
        report.problems.append(f"{join(root, LABELS_FILE)} has {vocab.num_rows} classes, "
                               f"store.json vocabulary says {want}")
    known = set(vocab["index"].to_pylist())
    for shard_id, table in tables.items():
        bad = sorted({x for ls in table["labels"].to_pylist() for x in ls} - known)
        if bad:
            report.problems.append(f"{part_name(shard_id)}: labels {bad[:5]} are not in "
                                   f"{LABELS_FILE}")


def _check_shard(fs: Any, root: str, backend: Any, spec: Any, shard_id: int, part: str,
                 rows: list[dict[str, Any]], report: VerifyReport, bar: tqdm) -> None:
    ok_rows = [r for r in rows if r["status"] == OK]
    files = {r["shard_file"] for r in rows}
    if len(files) > 1:
        report.problems.append(f"{part}: rows name different shard files {sorted(files)}")
        return
    for r in rows:
        if r["shard"] != shard_id:
            report.problems.append(f"{part}: clip {r['clip_id']!r} says shard {r['shard']}")
        if (r["status"] == OK) != (r["row"] >= 0):
            report.problems.append(f"{part}: clip {r['clip_id']!r} status {r['status']!r} "
                                   f"but row {r['row']}")
    if not ok_rows:
        return
    shard_file = ok_rows[0]["shard_file"]
    where = f"shard {shard_id} ({shard_file}, named by {part})"
    try:
        check_shard_file(shard_file, part)
        reader = backend.open(fs, join(root, shard_file), spec)
    except StoreError as exc:
        report.problems.append(f"{where}: {exc}")
        bar.update(len(ok_rows))
        return
    try:
        ids, num_frames = reader.clip_ids, reader.num_frames
        if len(ids) != len(ok_rows):
            report.problems.append(f"{where}: holds {len(ids)} clips, index has "
                                   f"{len(ok_rows)} ok rows")
        for start in range(0, len(ok_rows), BATCH):
            batch = ok_rows[start:start + BATCH]
            try:
                data = reader.read([r["row"] for r in batch])
            except (StoreError, OSError, ValueError) as exc:
                report.problems.append(f"{where}: rows {batch[0]['row']}..{batch[-1]['row']} "
                                       f"unreadable: {exc}")
                bar.update(len(batch))
                continue
            for r, d in zip(batch, data, strict=True):
                _check_clip(r, d, ids, num_frames, where, report)
            bar.update(len(batch))
    except StoreError as exc:
        report.problems.append(f"{where}: {exc}")
    finally:
        reader.close()


def _check_clip(r: dict[str, Any], d: Any, ids: list[str], num_frames: Any, where: str,
                report: VerifyReport) -> None:
    i, cid = r["row"], r["clip_id"]
    if i >= len(ids) or ids[i] != cid:
        report.problems.append(f"{where}: row {i} holds clip "
                               f"{ids[i] if i < len(ids) else None!r}, index says {cid!r}")
        return
    if int(num_frames[i]) != r["video_frames"]:
        report.problems.append(f"{where}: clip {cid!r} has {int(num_frames[i])} frames, "
                               f"index says {r['video_frames']}")
    frames = d.frames[: r["video_frames"]]
    wav = b"" if d.waveform is None else d.waveform[: r["audio_samples"]].tobytes()
    if clip_checksum(d.fbank.astype("<f2").tobytes(), frames, wav) != r["checksum"]:
        report.problems.append(f"{where}: clip {cid!r} checksum mismatch (corrupt data); "
                               f"{rebuild_hint(int(r['shard']))}")
    else:
        report.checked += 1


def _find_orphans(fs: Any, root: str, named: set[str], superseded: dict[str, float],
                  damaged: set[int], report: VerifyReport, fix: bool, grace_seconds: float
                  ) -> None:
    """Data files no index part names, and temp files of interrupted index writes. A data
    file replaced by a later commit ages from its replacement (readers of the older
    snapshot may still use it); one whose shard's index part is damaged is not an orphan
    at all: it may be the only copy of that shard's features, so it is kept and named."""
    now = time.time()
    for directory in (SHARDS_DIR, INDEX_DIR):
        try:
            entries = fs.ls(join(root, directory), detail=False)
        except FileNotFoundError:
            continue
        for entry in sorted(entries):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            rel = f"{directory}/{name}"
            if rel in named or (directory == INDEX_DIR and PART_RE.match(name)):
                continue
            m = DATA_NAME_RE.match(name) if directory == SHARDS_DIR else None
            if m and int(m.group(1)) in damaged:
                report.kept.append(rel)
                report.problems.append(_damaged_part_advice(int(m.group(1)), rel))
                continue
            since = superseded.get(rel)
            age = now - (since if since is not None else newest_mtime(fs, entry))
            _orphan(fs, entry, rel, report, fix, age >= grace_seconds)


def _find_uploads(fs: Any, root: str, report: VerifyReport, fix: bool, grace_seconds: float
                  ) -> None:
    """S3: multipart uploads under shards/ that a killed writer never finished (FORMAT.md
    "Object storage"); fix aborts those begun more than ``grace_seconds`` ago."""
    now = time.time()
    for key, upload_id, began in pending_uploads(fs, root):
        report.uploads.append(key)
        if fix and now - began >= grace_seconds:
            abort_upload(fs, root, key, upload_id)
            report.aborted.append(key)


def _damaged_part_advice(shard_id: int, rel: str) -> str:
    part = part_name(shard_id)
    return (f"{rel} is kept, not an orphan: its index part {part} is damaged, and it may be "
            f"the only copy of shard {shard_id}'s features. Recover the part from the copy "
            "this file carries: `pipeline verify STORE --recover-index` (FORMAT.md "
            f"\"Recovering an index part\"); or restore {part} from a backup; or drop the "
            f"shard: delete {part} and run the same `pipeline build...` command again (it "
            "re-processes the shard from its media)")


def _orphan(fs: Any, entry: str, rel: str, report: VerifyReport, fix: bool, old: bool
            ) -> None:
    report.orphans.append(rel)
    if fix and old:
        remove(fs, entry)
        report.removed.append(rel)

