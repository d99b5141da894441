"""Atomic commit for real: writers SIGKILLed mid-shard, and concurrent writers."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from store_fixtures import kill_at_marker, media_records

from store import StoreSpec, create_store, open_store
from store.verify import verify_store
from store.writer import HOLD_ENV

REPO = Path(__file__).resolve().parents[1]
WRITE_SHARD = """
import pickle, sys
from store import open_writer
records = pickle.load(open(sys.argv[2], "rb"))
for r in records:
    r.clip_id += sys.argv[4]
print(open_writer(sys.argv[1]).write_shard(int(sys.argv[3]), records))
"""


@pytest.fixture(scope="module")
def records_file(media_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("records") / "records.pkl"
    path.write_bytes(pickle.dumps(media_records(media_dir, StoreSpec())))
    return path


def _writer(store: Path, records: Path, shard: int, hold: str = "", marker: Path | None = None,
            suffix: str = "") -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(HOLD_ENV, None)
    if hold:
        env[HOLD_ENV] = f"{hold}:{marker}"
    return subprocess.Popen([sys.executable, "-c", WRITE_SHARD, str(store), str(records),
                             str(shard), suffix], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_writer_killed_mid_shard_leaves_nothing_visible(backend, records_file, tmp_path):
    store = tmp_path / "store"
    create_store(str(store), StoreSpec(backend=backend))
    # "data": killed with half the shard data on disk; "commit": data complete, no index part
    for phase, shard in (("data", 1), ("commit", 2)):
        marker = tmp_path / f"{phase}.pid"
        kill_at_marker(_writer(store, records_file, shard, phase, marker), marker)
    assert any((store / "shards").iterdir()), "the killed writers did leave partial files"
    reader = open_store(str(store))
    assert len(reader) == 0 and reader.shard_ids() == []
    report = verify_store(str(store), progress=False)
    assert report.ok, report.summary()
    assert len(report.orphans) == 2
    # a re-run commits cleanly; --fix then removes the garbage the killed writers left
    proc = _writer(store, records_file, 1)
    assert proc.wait(120) == 0, proc.stderr.read().decode()
    report = verify_store(str(store), fix=True, grace_seconds=0, progress=False)
    assert report.ok and len(report.removed) == 2, report.summary()
    assert verify_store(str(store), progress=False).orphans == []
    assert open_store(str(store)).get("bunny").frames


@pytest.mark.slow
def test_writer_killed_after_commit_keeps_the_new_shard(records_file, tmp_path):
    store = tmp_path / "store"
    records = pickle.loads(records_file.read_bytes())
    first = create_store(str(store), StoreSpec()).write_shard(4, records[:3])
    marker = tmp_path / "cleanup.pid"
    kill_at_marker(_writer(store, records_file, 4, "cleanup", marker), marker)
    reader = open_store(str(store))
    assert reader.index()["clip_id"].to_pylist() == [r.clip_id for r in records]
    report = verify_store(str(store), progress=False)
    assert report.ok and report.orphans == [first["shard_file"]], report.summary()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_two_processes_write_different_shards_concurrently(backend, records_file, tmp_path):
    store = tmp_path / "store"
    create_store(str(store), StoreSpec(backend=backend))
    procs = [_writer(store, records_file, shard, suffix=f"_{shard}") for shard in (10, 11)]
    for p in procs:
        assert p.wait(180) == 0, p.stderr.read().decode()
    reader = open_store(str(store))
    assert reader.shard_ids() == [10, 11]
    records = pickle.loads(records_file.read_bytes())
    assert len(reader) == 2 * len(records)
    a, b = reader.filter(), reader.index().to_pylist()
    assert a.num_rows == 2 * sum(r.status == "ok" for r in records)
    files = {row["shard_file"] for row in b}
    assert len(files) == 2
    report = verify_store(str(store), progress=False)
    assert report.ok and not report.orphans, report.summary()
    rows = reader.read_shard(11)
    want = {r.clip_id + "_11": r for r in records}
    for clip in rows:
        ref = want[clip.clip_id].fbank
        if ref is not None:
            assert np.array_equal(clip.fbank.numpy().view(np.uint16), ref.view(np.uint16))
