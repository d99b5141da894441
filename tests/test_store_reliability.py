"""A damaged store is reported, never made worse (issue 8, items 2 and 14).

- ``verify --fix`` keeps the data file of a shard whose index part is damaged (before the
  fix it was listed as an orphan and deleted: the only copy of the shard's features), says
  how to recover it, and ``verify --recover-index`` restores the part byte for byte from
  the copy the data file carries;
- store.json with a wrong field type is named with file and field (before: a TypeError);
- a deleted shard makes ``info`` give advice (before: a bare ``[Errno 2]``);
- one unreadable index part leaves ``info`` and ``open_store`` working for the rest;
- a truncated labels.parquet fails ``verify`` (before: verify passed, info broke).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from store_fixtures import media_records

from store import StoreError, StoreSpec, create_store, open_store
from store.cli import add_commands
from store.info import store_info
from store.verify import verify_store


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def _vocab(n: int = 301) -> pa.Table:
    return pa.table({"index": pa.array(range(n), pa.int32()),
                     "mid": [f"/m/{i}" for i in range(n)],
                     "display_name": [f"class {i}" for i in range(n)]})


@pytest.fixture(scope="module", params=["zarr", "hdf5"])
def store3(request, media_dir, tmp_path_factory) -> Path:
    """Three committed shards (0: 3 clips, 1: 3 clips, 2: 3 clips incl. failures)."""
    records = media_records(media_dir, StoreSpec())
    path = tmp_path_factory.mktemp(f"rel_{request.param}") / "store"
    writer = create_store(str(path), StoreSpec(backend=request.param), _vocab())
    for shard, part in enumerate((records[:3], records[3:6], records[6:])):
        writer.write_shard(shard, part)
    return path


@pytest.fixture()
def store(store3: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(store3, copy)
    return copy


def test_verify_fix_keeps_data_of_a_damaged_index_part_and_recovers_it(store, capsys):
    part = store / "index" / "000002.parquet"
    original = part.read_bytes()
    (data_file,) = (store / "shards").glob("000002-*")
    part.write_bytes(original[:300])
    assert _cli("verify", str(store), "--fix", "--grace-seconds", "0", "--quiet") == 1
    out = capsys.readouterr().out
    assert data_file.exists(), out  # not deleted as an orphan
    assert "(removed)" not in out and f"kept shards/{data_file.name}" in out
    assert "--recover-index" in out and "index/000002.parquet" in out
    assert _cli("verify", str(store), "--recover-index", "--quiet") == 0
    out = capsys.readouterr().out
    assert "index/000002.parquet: recovered from the copy in shards/" in out
    assert "0 problems" in out
    assert part.read_bytes() == original  # byte for byte


def test_recovered_part_is_still_checked_against_its_checksums(store, capsys):
    """Recovery restores the checksums written at commit time: damaged data stays damaged."""
    part = store / "index" / "000000.parquet"
    part.write_bytes(b"garbage")
    (data_file,) = (store / "shards").glob("000000-*")
    victim = data_file / "fbank" / "c" / "0" / "0" / "0" if data_file.is_dir() else data_file
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside clip data, away from the Zarr chunk index
    victim.write_bytes(bytes(raw))
    assert _cli("verify", str(store), "--recover-index", "--quiet") == 1
    out = capsys.readouterr().out
    assert "recovered from the copy" in out
    assert "checksum mismatch" in out or "unreadable" in out, out


@pytest.mark.parametrize("field,value", [("fbank", [1]), ("shard_size", "abc"),
                                         ("store_waveform", 1), ("jpeg_quality", -3)])
def test_store_json_with_a_wrong_type_names_file_and_field(store, field, value, capsys):
    meta = json.loads((store / "store.json").read_text())
    meta[field] = value
    (store / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=rf"store\.json: field '{field}' must be"):
        open_store(str(store))
    with pytest.raises(StoreError, match=rf"field '{field}'"):
        store_info(str(store))
    report = verify_store(str(store), progress=False)
    assert not report.ok and f"field '{field}'" in report.problems[0]
    assert _cli("info", str(store)) == 2
    assert f"store.json: field '{field}'" in capsys.readouterr().err


def test_store_json_wrong_type_inside_fbank(store):
    meta = json.loads((store / "store.json").read_text())
    meta["fbank"]["num_mel_bins"] = "128"
    (store / "store.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"field 'fbank.num_mel_bins' must be int"):
        open_store(str(store))


def test_info_on_a_deleted_shard_gives_advice(store, capsys):
    (data_file,) = (store / "shards").glob("000001-*")
    shutil.rmtree(data_file) if data_file.is_dir() else data_file.unlink()
    assert _cli("info", str(store)) == 1
    out = capsys.readouterr().out
    assert f"shard data file shards/{data_file.name} is missing" in out
    assert "delete index/000001.parquet and run the same `pipeline build...`" in out
    assert "Errno" not in out


def test_one_unreadable_index_part_leaves_the_rest_usable(store, capsys):
    full = open_store(str(store))
    n_full = len(full)
    lost = {r["clip_id"] for r in full.index().to_pylist() if r["shard"] == 1}
    (store / "index" / "000001.parquet").write_bytes(b"PAR1 not really")
    s = open_store(str(store))
    assert len(s) == n_full - len(lost) and s.shard_ids() == [0, 2]
    (bad,) = s.unreadable_parts
    assert bad.endswith("index/000001.parquet")
    assert "delete index/000001.parquet" in s.unreadable_parts[bad]
    assert _cli("info", str(store)) == 1
    out = capsys.readouterr().out
    assert "PROBLEM    index part" in out and "000001.parquet is unreadable" in out
    assert f"clips      {n_full - len(lost)} " in out


def test_verify_checks_labels_parquet(store):
    labels = store / "labels.parquet"
    labels.write_bytes(labels.read_bytes()[:50])
    report = verify_store(str(store), progress=False)
    assert not report.ok and any("labels.parquet is unreadable" in p
                                 for p in report.problems), report.summary()
    info = store_info(str(store))  # info still summarises the rest
    assert any("labels.parquet" in p for p in info["problems"])


def test_verify_checks_labels_against_the_index(store, tmp_path):
    from store.backends.fs import resolve
    from store.index import write_vocabulary

    fs, root = resolve(str(store))
    write_vocabulary(fs, root, _vocab(10))  # the index uses labels up to 300
    report = verify_store(str(store), progress=False)
    assert not report.ok
    assert any("has 10 classes, store.json vocabulary says 301" in p for p in report.problems)
    assert any("are not in labels.parquet" in p for p in report.problems)


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_recover_index_on_an_object_store_picks_the_newest_copy(backend, media_dir):
    """memory:// takes the object-store paths; a re-run shard has two data files (the old
    one superseded): recovery takes the newest commit's copy."""
    import fsspec

    from store.recover import recover_parts

    records = media_records(media_dir, StoreSpec())
    url, fs = f"memory://recover_{backend}", fsspec.filesystem("memory")
    try:
        writer = create_store(url, StoreSpec(backend=backend))
        writer.write_shard(0, records[:3])
        newest = writer.write_shard(0, records[:4])["shard_file"]
        part = f"/recover_{backend}/index/000000.parquet"
        original = fs.cat(part)
        fs.pipe(part, b"junk")
        report = verify_store(url, fix=True, grace_seconds=0, progress=False)
        assert len(report.kept) == 2 and not report.removed, report.summary()
        assert recover_parts(url) == [f"index/000000.parquet: recovered from the copy in "
                                      f"{newest} (4 clips)"]
        assert fs.cat(part) == original and verify_store(url, progress=False).ok
    finally:
        fs.rm(f"/recover_{backend}", recursive=True)
