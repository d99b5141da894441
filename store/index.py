"""The Parquet index: one part per shard (index/NNNNNN.parquet), one row per clip.

An index part is the commit record of its shard: it is written last, in one step, and
names the shard's data file. Readers trust index parts only; anything under shards/ that
no part names is garbage from a killed writer (``pipeline verify`` reports it).
The parts can be read without our code, e.g. duckdb ``read_parquet('STORE/index/*.parquet')``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from store.backends.fs import atomic_write_bytes, join
from store.errors import StoreError, rebuild_hint

INDEX_DIR = "index"
SHARDS_DIR = "shards"
LABELS_FILE = "labels.parquet"
PART_RE = re.compile(r"^(\d+)\.parquet$")
SUPERSEDED_KEY = b"mavil_store.superseded"
MANIFEST_KEY = b"mavil_store.manifest"
DATA_NAME_RE = re.compile(r"^(\d+)-[0-9a-f]+\.(zarr|h5)$")  # a data file's name in shards/
SHARD_FILE_RE = re.compile(r"^shards/\d+-[0-9a-f]+\.(zarr|h5)$")

INDEX_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("source_id", pa.string()),
    ("start", pa.float64()),
    ("end", pa.float64()),
    ("uri", pa.string()),
    ("split", pa.string()),
    ("labels", pa.list_(pa.int32())),
    ("status", pa.string()),
    ("error", pa.string()),
    ("shard", pa.int32()),
    ("shard_file", pa.string()),  # relative to the store root; "" when no clip was ok
    ("row", pa.int32()),  # position in the shard's arrays; -1 for failed clips
    ("audio_frames", pa.int32()),
    ("audio_samples", pa.int32()),
    ("video_frames", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("has_audio", pa.bool_()),
    ("has_video", pa.bool_()),
    ("duration", pa.float64()),
    ("checksum", pa.string()),  # blake2b-128 hex of the stored feature bytes; "" if failed
])

VOCAB_SCHEMA = pa.schema([
    ("index", pa.int32()), ("mid", pa.string()), ("display_name", pa.string()),
])


def check_shard_file(name: str, where: str) -> str:
    """A shard_file from an index part, refused unless it is a plain name under shards/
    (an edited index must never make the reader open a path outside the store)."""
    if not SHARD_FILE_RE.match(name):
        raise StoreError(f"{where}: shard_file {name!r} is not a shard data file name; the "
                         f"index part is corrupt or edited; {rebuild_hint(where)}")
    return name


def part_name(shard_id: int) -> str:
    return f"{INDEX_DIR}/{shard_id:06d}.parquet"


def make_part(rows: list[dict[str, Any]], shard_id: int, shard_file: str,
              superseded: dict[str, float] | None = None, manifest: str = "") -> pa.Table:
    """One shard's index part. Schema metadata: the shard id and data file, the data files
    of earlier commits still kept for older readers (``superseded``) and the fingerprint
    of the manifest whose build committed it (``manifest``; FORMAT.md)."""
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    meta = {b"mavil_store.shard": str(shard_id).encode(),
            b"mavil_store.shard_file": shard_file.encode()}
    if superseded:
        meta[SUPERSEDED_KEY] = json.dumps(
            [{"file": f, "since": t} for f, t in sorted(superseded.items())]).encode()
    if manifest:
        meta[MANIFEST_KEY] = manifest.encode()
    return table.replace_schema_metadata(meta)


def part_bytes(table: pa.Table) -> bytes:
    """An index part as the Parquet file bytes written to index/NNNNNN.parquet."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def parse_part(data: bytes) -> pa.Table:
    """Index part bytes -> the table (schema metadata kept); ValueError if unusable."""
    try:
        table = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)  # no thread
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(str(exc)) from exc
    missing = [n for n in INDEX_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"lacks columns {missing}")
    meta = table.schema.metadata
    return table.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA).replace_schema_metadata(meta)


def write_part(fs: Any, root: str, shard_id: int, table: pa.Table | bytes) -> str:
    """Write one index part in one step (this is the shard's commit)."""
    path = join(root, part_name(shard_id))
    atomic_write_bytes(fs, path, table if isinstance(table, bytes) else part_bytes(table))
    return path


def _read_parquet(fs: Any, path: str) -> pa.Table:
    """A whole (small) Parquet file read into memory, then parsed on this thread: no Arrow
    IO or CPU pool thread is left at interpreter exit, where it can abort the process (exit
    134, "terminate called without an active exception", apache/arrow#34314; store/info.py
    has the measurement). ``pq.ParquetFile.read`` starts no thread; ``pq.read_table`` goes
    through the datasets API, whose IO pool starts threads even with ``use_threads=False``
    (counted in /proc/self/task: +1, +2 with its default pre-buffering). Index parts are
    small; read_index parallelises over parts itself."""
    with fs.open(path, "rb") as f:
        data = f.read()
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


def read_part(fs: Any, path: str) -> pa.Table:
    try:
        table = _read_parquet(fs, path)
    except FileNotFoundError as exc:
        raise StoreError(f"index part {path} is missing (removed while reading?); run the "
                         "same `pipeline build...` command again to rebuild it") from exc
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StoreError(f"index part {path} is unreadable ({exc}); {rebuild_hint(path)}; "
                         "`pipeline verify` lists all such parts") from exc
    missing = [n for n in INDEX_SCHEMA.names if n not in table.column_names]
    if missing:
        raise StoreError(f"index part {path} lacks columns {missing}; {rebuild_hint(path)}")
    meta = table.schema.metadata
    return table.select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA).replace_schema_metadata(meta)


def superseded_files(table: pa.Table) -> dict[str, float]:
    """{data file: unix time it was replaced} recorded in an index part's metadata: data
    files of earlier commits of the shard, kept so readers of older snapshots can finish
    (FORMAT.md "Commit rule"); `pipeline verify --fix` removes them after the grace."""
    raw = (table.schema.metadata or {}).get(SUPERSEDED_KEY)
    if not raw:
        return {}
    try:
        entries = json.loads(raw)
        return {str(e["file"]): float(e["since"]) for e in entries
                if SHARD_FILE_RE.match(str(e["file"]))}
    except (ValueError, TypeError, KeyError):
        return {}


def list_parts(fs: Any, root: str) -> dict[int, str]:
    """{shard_id: path} of every committed index part."""
    directory = join(root, INDEX_DIR)
    try:
        names = fs.ls(directory, detail=False)
    except FileNotFoundError:
        return {}
    parts = {}
    for name in names:
        m = PART_RE.match(name.rstrip("/").rsplit("/", 1)[-1])
        if m:
            parts[int(m.group(1))] = join(directory, m.group(0))
    return dict(sorted(parts.items()))


def read_index(fs: Any, root: str, shards: Iterable[int] | None = None,
               unreadable: dict[str, str] | None = None) -> pa.Table:
    """All committed parts, in shard order; an empty table with the schema if none.
    ``shards``: read only these shards' parts (a shard task on a 2 M-clip store must not
    read 2,000 parts); a part that is not committed is a StoreError.
    ``unreadable``: collect parts that exist but cannot be read into this dict (path ->
    reason, with the rebuild advice) and return the others, instead of raising."""
    if shards is None:
        paths = list(list_parts(fs, root).values())
    else:
        paths = [join(root, part_name(int(s))) for s in sorted(set(shards))]

    def read(path: str) -> pa.Table | None:
        if unreadable is None:
            return read_part(fs, path)
        try:
            return read_part(fs, path)
        except StoreError as exc:
            if shards is not None and not fs.exists(path):
                raise
            unreadable[path] = str(exc)
            return None

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(paths)))) as pool:
        tables = [t for t in pool.map(read, paths) if t is not None]  # Arrow drops the GIL
    if not tables:
        return INDEX_SCHEMA.empty_table()
    return pa.concat_tables(tables).replace_schema_metadata(None)


def write_vocabulary(fs: Any, root: str, table: pa.Table) -> None:
    missing = [n for n in VOCAB_SCHEMA.names if n not in table.column_names]
    if missing:
        raise StoreError(f"vocabulary table lacks columns {missing}; need index, mid, "
                         "display_name")
    table = table.select(VOCAB_SCHEMA.names).cast(VOCAB_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(fs, join(root, LABELS_FILE), buf.getvalue())


def read_vocabulary(fs: Any, root: str) -> pa.Table:
    path = join(root, LABELS_FILE)
    if not fs.exists(path):
        return VOCAB_SCHEMA.empty_table()
    try:
        return _read_parquet(fs, path).select(VOCAB_SCHEMA.names).cast(VOCAB_SCHEMA)
    except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
        raise StoreError(f"{path} is unreadable ({exc}); re-create it from the label "
                         "csv") from exc
