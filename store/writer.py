"""Creating a store and writing shards with an atomic commit.

write_shard(shard_id, records):
  1. packs the ok clips into arrays and writes them as a NEW data file
     shards/NNNNNN-<token>.(zarr|h5) (locally: temp name, then rename);
  2. writes index/NNNNNN.parquet in one step (temp + os.replace, or one PUT) -- the commit;
  3. keeps the data file the previous commit named: the new part records it (and when it
     was replaced) as superseded, so a reader of the older snapshot finishes its epoch;
     `pipeline verify --fix` removes it once the grace period has passed.
A writer killed before 2 leaves only an unnamed data file (garbage, invisible to readers);
killed after 2 the new shard is committed. Writers of different shards touch disjoint
names, so concurrent processes never conflict.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from store.backends import ShardData, get_backend
from store.backends.fs import atomic_write_bytes, join, resolve, size_on_disk, token
from store.claim import (
    check_claim,
    claim_manifest,
    conflict_message,
    shard_fingerprint,
)
from store.errors import StoreConflict, StoreError
from store.fbank import fbank_params
from store.index import (
    MANIFEST_KEY,
    SHARD_FILE_RE,
    SHARDS_DIR,
    list_parts,
    make_part,
    part_bytes,
    part_name,
    read_part,
    superseded_files,
    write_part,
    write_vocabulary,
)
from store.records import OK, ClipRecord, clip_checksum
from store.spec import STORE_JSON, StoreSpec

HOLD_ENV = "MAVIL_STORE_TEST_HOLD"  # "phase:marker_path": tests kill a writer mid-shard


def _test_hold(phase: str) -> None:
    """Pause forever at ``phase`` when a test asks (it then SIGKILLs this process)."""
    want = os.environ.get(HOLD_ENV, "")
    if want and want.split(":", 1)[0] == phase:
        with open(want.split(":", 1)[1], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(3600)


def read_spec(fs: Any, root: str) -> StoreSpec:
    path = join(root, STORE_JSON)
    try:
        with fs.open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError as exc:
        raise StoreError(f"{path} not found: not a feature store (build one with `pipeline "
                         "build-audioset`, `build-vggsound` or `build`)") from exc
    return StoreSpec.from_json(text, source=path)


def create_store(path: str, spec: StoreSpec, vocabulary: pa.Table | None = None
                 ) -> StoreWriter:
    """Create a store (store.json, labels.parquet). Re-creating with the same spec is a
    no-op that returns a writer, so a restarted pipeline can call it again."""
    try:
        fbank_params(spec)  # options store.fbank cannot compute fail here, not per clip
    except ValueError as exc:
        raise StoreError(f"{path}: {exc}") from None
    fs, root = resolve(path)
    if fs.exists(join(root, STORE_JSON)):
        old = read_spec(fs, root)
        if _comparable(old) != _comparable(spec):
            raise StoreError(f"{join(root, STORE_JSON)} exists with a different spec; "
                             "use another path, or delete the store to rebuild it")
        return StoreWriter(fs, root, old)
    fs.makedirs(root, exist_ok=True)
    if vocabulary is not None:
        write_vocabulary(fs, root, vocabulary)
        spec.vocabulary.setdefault("num_classes", vocabulary.num_rows)
    atomic_write_bytes(fs, join(root, STORE_JSON), spec.to_json().encode())
    return StoreWriter(fs, root, spec)


def _comparable(spec: StoreSpec) -> dict[str, Any]:
    d = spec.to_dict()
    d.pop("stats")
    d.pop("vocabulary")
    return d


def open_writer(path: str) -> StoreWriter:
    fs, root = resolve(path)
    return StoreWriter(fs, root, read_spec(fs, root))


class StoreWriter:
    """Writes shards of one store; safe to use from many processes, one per shard."""

    def __init__(self, fs: Any, root: str, spec: StoreSpec) -> None:
        self.fs, self.root, self.spec = fs, root, spec
        self.backend = get_backend(spec.backend)

    def committed_shards(self) -> set[int]:
        return set(list_parts(self.fs, self.root))

    def shard_index(self, shard_id: int) -> pa.Table:
        path = join(self.root, part_name(shard_id))
        if not self.fs.exists(path):
            raise StoreError(f"shard {shard_id} is not committed ({path} does not exist)")
        return read_part(self.fs, path)

    # -- the manifest claim (store/claim.py, FORMAT.md "Concurrent builds") --------------
    def claim_manifest(self, shards: Sequence[str], description: str = "") -> None:
        claim_manifest(self.fs, self.root, shards, self.spec.shard_size, description)

    def check_claim(self, shard_id: int, claim: str) -> None:
        check_claim(self.fs, self.root, shard_id, claim)

    def set_stats(self, stats: dict[str, Any]) -> None:
        self.spec.stats = dict(stats)
        atomic_write_bytes(self.fs, join(self.root, STORE_JSON), self.spec.to_json().encode())

    def write_shard(self, shard_id: int, records: list[ClipRecord], claim: str = ""
                    ) -> dict[str, Any]:
        """Write and commit one shard atomically, replacing a previous commit whole.
        ``claim`` (a build's shard_fingerprint): refuse (StoreConflict) unless the store's
        manifest claim and the commit being replaced stand for these same clips."""
        if not isinstance(shard_id, int | np.integer) or shard_id < 0:
            raise StoreError(f"shard id must be a non-negative int, got {shard_id!r}")
        shard_id = int(shard_id)
        ids = [r.clip_id for r in records]
        bad = [r.clip_id for r in records if not (isinstance(r.clip_id, str) and r.clip_id)
               or not (isinstance(r.status, str) and r.status)]
        if bad:
            raise StoreError(f"shard {shard_id}: records need a non-empty str clip_id and "
                             f"status; got clip ids {bad[:5]}")
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise StoreError(f"shard {shard_id}: duplicate clip ids {dup[:5]}")
        if claim and shard_fingerprint(ids) != claim:
            raise StoreError(f"shard {shard_id}: records are not the clips of claim {claim}")
        ok = [r for r in records if r.status == OK]
        data, rows, sums = self._pack(shard_id, ok)
        if claim:
            self.check_claim(shard_id, claim)
        old_file, superseded = self._committed_file(shard_id, claim)
        if old_file:
            superseded[old_file] = time.time()
        shard_file = ""
        if ok:
            shard_file = f"{SHARDS_DIR}/{shard_id:06d}-{token()}{self.backend.suffix}"
        superseded.pop(shard_file, None)
        part = part_bytes(make_part(self._rows(records, shard_id, shard_file, rows, sums, data),
                                    shard_id, shard_file, superseded, claim))
        nbytes = 0
        if ok:
            data.index_part = part  # the data file carries its own index part (recovery)
            path = join(self.root, shard_file)
            self.backend.write(self.fs, path, data, _test_hold)
            nbytes = size_on_disk(self.fs, path)
        _test_hold("commit")  # data complete, index part not yet written
        write_part(self.fs, self.root, shard_id, part)
        _test_hold("cleanup")  # committed
        return {"shard": shard_id, "clips": len(records), "ok": len(ok),
                "failed": len(records) - len(ok), "bytes": nbytes, "shard_file": shard_file}

    def _committed_file(self, shard_id: int, claim: str = "") -> tuple[str, dict[str, float]]:
        """The data file the current commit of a shard names ("" if none), and the
        superseded files it records that still exist (carried into the next commit).
        With ``claim``: StoreConflict if that commit holds other clips."""
        path = join(self.root, part_name(shard_id))
        if not self.fs.exists(path):
            return "", {}
        try:
            table = read_part(self.fs, path)
        except StoreError:
            return "", {}  # a damaged old part: verify keeps its data file and says so
        if claim:
            theirs = (table.schema.metadata or {}).get(MANIFEST_KEY, b"").decode() or \
                shard_fingerprint(table["clip_id"].to_pylist())
            if theirs != claim:
                raise StoreConflict(conflict_message(self.root, shard_id))
        names = table["shard_file"].to_pylist()
        name = next((n for n in names if n), "")
        kept = {f: t for f, t in superseded_files(table).items()
                if self.fs.exists(join(self.root, f))}
        return (name if SHARD_FILE_RE.match(name) else ""), kept

    def _pack(self, shard_id: int, ok: list[ClipRecord]
              ) -> tuple[ShardData, dict[str, int], dict[str, str]]:
        spec = self.spec
        t, m, f = spec.target_frames, spec.num_mel_bins, spec.num_frames
        n = len(ok)
        fbank = np.zeros((n, t, m), dtype="<f2")
        frames = np.full((n, f), b"", dtype=object)
        num_frames = np.zeros(n, dtype=np.int16)
        samples = np.zeros(n, dtype=np.int32)
        wav = np.zeros((n, spec.clip_samples), dtype="<i2") if spec.store_waveform else None
        rows, sums = {}, {}
        for i, r in enumerate(ok):
            where = f"shard {shard_id}, clip {r.clip_id!r}"
            if r.fbank is not None:
                a = np.asarray(r.fbank)
                if a.shape != (t, m):
                    raise StoreError(f"{where}: fbank shape {a.shape}, store expects {(t, m)}")
                fbank[i] = a.astype("<f2")
                if not np.all(np.isfinite(fbank[i])):
                    raise StoreError(f"{where}: fbank has NaN or inf values (as float16)")
            if len(r.frames) > f:
                raise StoreError(f"{where}: {len(r.frames)} frames, store keeps at most {f}")
            if any(not isinstance(b, bytes | bytearray) or not b for b in r.frames):
                raise StoreError(f"{where}: frames must be non-empty JPEG bytes")
            for j, jpeg in enumerate(r.frames):  # one by one: never via numpy's "S" dtype
                frames[i, j] = bytes(jpeg)
            num_frames[i] = len(r.frames)
            wav_bytes = b""
            if wav is not None and r.waveform is not None:
                w = np.asarray(r.waveform).reshape(-1)[: spec.clip_samples].astype("<i2")
                wav[i, : len(w)] = w
                samples[i] = len(w)
                wav_bytes = w.tobytes()
            rows[r.clip_id] = i
            sums[r.clip_id] = clip_checksum(fbank[i].tobytes(), frames[i, :num_frames[i]],
                                            wav_bytes)
        data = ShardData(shard_id, [r.clip_id for r in ok], fbank, frames, num_frames, wav,
                         samples, spec.fbank_compression)
        return data, rows, sums

    def _rows(self, records: list[ClipRecord], shard_id: int, shard_file: str,
              rows: dict[str, int], sums: dict[str, str], data: ShardData
              ) -> list[dict[str, Any]]:
        out = []
        for r in records:
            ok = r.status == OK
            i = rows.get(r.clip_id, -1)
            out.append({
                "clip_id": r.clip_id, "source_id": r.source_id, "start": float(r.start),
                "end": float(r.end), "uri": r.uri, "split": r.split,
                "labels": [int(x) for x in r.labels], "status": r.status,
                "error": r.error, "shard": shard_id, "shard_file": shard_file,
                "row": i, "audio_frames": int(r.audio_frames) if ok else 0,
                "audio_samples": int(data.audio_samples[i]) if ok else 0,
                "video_frames": int(data.num_frames[i]) if ok else 0,
                "height": int(r.height), "width": int(r.width),
                "has_audio": bool(r.has_audio), "has_video": bool(r.has_video),
                "duration": float(r.duration), "checksum": sums.get(r.clip_id, ""),
            })
        return out
