"""Recover damaged index parts from the copy each shard data file carries.

Every data file the writer commits holds the exact bytes of its own index part (array
``index_part``, FORMAT.md "Recovering an index part"). When ``index/NNNNNN.parquet`` is
damaged, the data file it named still carries that part, checksums included, so the part
can be restored byte for byte; `pipeline verify` then checks the data against those
checksums (nothing is re-certified: the checksums are the ones written at commit time).
"""

from __future__ import annotations

from typing import Any

from store.backends.fs import join, resolve
from store.errors import StoreError
from store.index import (
    DATA_NAME_RE,
    SHARDS_DIR,
    list_parts,
    parse_part,
    part_name,
    read_part,
    superseded_files,
    write_part,
)
from store.writer import read_spec


def read_index_copy(fs: Any, path: str, backend: str) -> bytes:
    """The index part copy a data file carries (b"" for files written before copies)."""
    if backend == "zarr":
        from store.backends.zarr_backend import read_index_copy as read
    else:
        from store.backends.hdf5_backend import read_index_copy as read
    return read(fs, path)


def damaged_parts(fs: Any, root: str) -> dict[int, str]:
    """{shard id: reason} of the index parts that exist but cannot be read."""
    out = {}
    for shard_id, path in list_parts(fs, root).items():
        try:
            read_part(fs, path)
        except StoreError as exc:
            out[shard_id] = str(exc)
    return out


def data_files(fs: Any, root: str, shard_id: int) -> list[str]:
    """Data files under shards/ that belong to ``shard_id`` (by their name)."""
    try:
        entries = fs.ls(join(root, SHARDS_DIR), detail=False)
    except FileNotFoundError:
        return []
    names = [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]
    return sorted(f"{SHARDS_DIR}/{n}" for n in names
                  if (m := DATA_NAME_RE.match(n)) and int(m.group(1)) == shard_id)


def recover_parts(path: str) -> list[str]:
    """Restore every damaged index part from its data file's copy; one line per part
    saying what was done (or why it could not be)."""
    fs, root = resolve(path)
    spec = read_spec(fs, root)
    lines = []
    for shard_id in damaged_parts(fs, root):
        part = part_name(shard_id)
        copies: dict[str, tuple[bytes, Any]] = {}
        for rel in data_files(fs, root, shard_id):
            try:
                raw = read_index_copy(fs, join(root, rel), spec.backend)
                table = parse_part(raw) if raw else None
            except (OSError, ValueError, KeyError, StoreError):
                continue
            if table is not None and rel in set(table["shard_file"].to_pylist()):
                copies[rel] = (raw, table)
        # the newest commit lists the older data files it replaced as superseded
        older = {f for _, t in copies.values() for f in superseded_files(t)}
        newest = [rel for rel in copies if rel not in older]
        if len(newest) != 1:
            found = "no data file with a copy of it" if not copies else \
                f"{len(newest)} candidate data files {newest}"
            lines.append(f"{part}: not recovered ({found}); restore it from a backup, or "
                         f"delete {part} and run the same `pipeline build...` command again "
                         "(it re-processes the shard from its media)")
            continue
        (rel,) = newest
        write_part(fs, root, shard_id, copies[rel][0])
        lines.append(f"{part}: recovered from the copy in {rel} "
                     f"({copies[rel][1].num_rows} clips)")
    return lines
