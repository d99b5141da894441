"""Which clips each shard id of a store stands for: the build's manifest claim.

``manifest.json`` holds one fingerprint per shard id (blake2b-64 of its clip ids, in
order). A build claims the store before it starts and every shard commit checks the claim,
so a build of another manifest into the same store is refused with a clear message instead
of overwriting the first build's shards (FORMAT.md "Concurrent builds": what local
filesystems and object stores each guarantee).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from store.backends.fs import atomic_write_bytes, is_local, join, resolve, token
from store.errors import StoreConflict, StoreError

MANIFEST_JSON = "manifest.json"


def shard_fingerprint(clip_ids: Sequence[str]) -> str:
    """What a shard id stands for in a build: blake2b-64 (hex) of its clip ids, in order,
    each followed by a NUL byte."""
    h = hashlib.blake2b(digest_size=8)
    for cid in clip_ids:
        h.update(cid.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def conflict_message(root: str, shard_id: int | None = None) -> str:
    where = f"shard {shard_id} of " if shard_id is not None else ""
    return (f"{where}{root} is being built, or was built, from another manifest (other clip "
            f"ids per shard; {MANIFEST_JSON} records them); a store holds one manifest's "
            "clips: use another --out, or run the same manifest")


def claim_store(path: str, shards: Sequence[str], shard_size: int, description: str = ""
                ) -> None:
    """claim_manifest for a store that may not exist yet (called before creating it, so a
    refused build writes nothing, not even store.json or labels.parquet)."""
    fs, root = resolve(path)
    fs.makedirs(root, exist_ok=True)
    claim_manifest(fs, root, shards, shard_size, description)


def claim_manifest(fs: Any, root: str, shards: Sequence[str], shard_size: int,
                   description: str = "") -> None:
    """Record that the store holds ``shards`` (one shard_fingerprint per shard id), or
    check that the recorded claim agrees: every shard id both name must stand for the
    same clips (a longer manifest that extends the claim replaces it). StoreConflict
    otherwise. Locally the first claim is created exclusively (link), so of two builds
    that start together exactly one wins; on object stores it is check-then-write plus a
    re-read, and the check at each commit (``write_shard(claim=...)``) refuses the rest."""
    path = join(root, MANIFEST_JSON)
    shards = list(shards)
    text = (json.dumps({"shards": shards, "shard_size": shard_size,
                        "description": description}, indent=1) + "\n").encode()
    if not _create_exclusive(fs, path, text):
        old = claimed_shards(fs, root)
        n = min(len(old), len(shards))
        if old[:n] != shards[:n]:
            raise StoreConflict(conflict_message(root))
        if len(shards) > len(old):
            atomic_write_bytes(fs, path, text)
    if claimed_shards(fs, root)[:len(shards)] != shards:  # lost a write race
        raise StoreConflict(conflict_message(root))


def check_claim(fs: Any, root: str, shard_id: int, claim: str) -> None:
    """StoreConflict unless the store's claim says shard ``shard_id`` is ``claim``."""
    claimed = claimed_shards(fs, root)
    if shard_id >= len(claimed) or claimed[shard_id] != claim:
        raise StoreConflict(conflict_message(root, shard_id))


def claimed_shards(fs: Any, root: str) -> list[str]:
    """The recorded fingerprints, [] when the store has no claim yet."""
    path = join(root, MANIFEST_JSON)
    try:
        with fs.open(path, "rb") as f:
            data = json.loads(f.read())
        shards = data["shards"]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path} is damaged ({exc}); it records which clips each shard "
                         "holds: delete it and re-run the build that made this store to "
                         "write it again") from exc
    if not isinstance(shards, list) or not all(isinstance(x, str) for x in shards):
        raise StoreError(f"{path}: field 'shards' must be a list of strings")
    return shards


def _create_exclusive(fs: Any, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; whether this call made it."""
    if is_local(fs):
        tmp = f"{path}.tmp-{token()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, fails if the name exists (also on NFS)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    if fs.exists(path):
        return False
    fs.pipe_file(path, data)
    return True
