"""verify finds corruption and names it; info reports counts and sizes; CLI exit codes."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from store_fixtures import media_records

from store import StoreError, StoreSpec, create_store, open_store
from store.cli import add_commands
from store.info import store_info
from store.verify import verify_store


@pytest.fixture(scope="module")
def records(media_dir):
    return media_records(media_dir, StoreSpec())


@pytest.fixture(scope="module", params=["zarr", "hdf5"])
def clean_store(request, records, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp(f"verify_{request.param}") / "store"
    writer = create_store(str(path), StoreSpec(backend=request.param))
    writer.write_shard(0, records[:4])
    writer.write_shard(1, records[4:])
    return path


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def _fbank_chunk_offset(shard: Path, backend: str, row: int) -> tuple[Path, int]:
    """Byte offset of one clip's fbank in its shard file, found from the file format."""
    if backend == "zarr":
        data = shard / "fbank" / "c" / "0" / "0" / "0"
        raw = data.read_bytes()
        import json

        count = json.loads((shard / "fbank" / "zarr.json").read_text())["shape"][0]
        index = np.frombuffer(raw[-4 - 16 * count:-4], dtype="<u8").reshape(count, 2)
        return data, int(index[row, 0])
    import h5py

    with h5py.File(shard, "r") as f:
        info = f["fbank"].id.get_chunk_info_by_coord((row, 0, 0))
    return shard, int(info.byte_offset)


def test_clean_store_verifies(clean_store, capsys):
    report = verify_store(str(clean_store), progress=False)
    assert report.ok and report.checked == 7 and report.clips == 9, report.summary()
    assert _run_cli("verify", str(clean_store), "--quiet") == 0
    assert "0 problems" in capsys.readouterr().out


def test_verify_detects_a_flipped_byte(clean_store, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    backend = "zarr" if any(p.suffix == ".zarr" for p in (store / "shards").iterdir()) \
        else "hdf5"
    rows = {r["clip_id"]: r for r in open_store(str(store)).index().to_pylist()}
    for victim in ("earth_10", "speech_10"):  # one clip in each shard
        row = rows[victim]
        path, offset = _fbank_chunk_offset(store / row["shard_file"], backend, row["row"])
        data = bytearray(path.read_bytes())
        data[offset + 5000] ^= 0x40
        path.write_bytes(bytes(data))
    report = verify_store(str(store), progress=False)
    assert not report.ok and len(report.problems) == 2, report.summary()
    for victim, problem in zip(("earth_10", "speech_10"), report.problems, strict=True):
        assert f"'{victim}'" in problem and "checksum mismatch" in problem
        assert rows[victim]["shard_file"] in problem
        assert f"delete index/{rows[victim]['shard']:06d}.parquet" in problem
    with pytest.raises(StoreError, match="'earth_10'.*checksum mismatch"):
        open_store(str(store), checksums=True).get("earth_10")
    assert open_store(str(store), checksums=True).get("earth_0").clip_id == "earth_0"
    assert _run_cli("verify", str(store), "--quiet") == 1
    assert "earth_10" in capsys.readouterr().out


def test_verify_detects_a_deleted_shard(clean_store, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    victim = open_store(str(store)).index()["shard_file"][0].as_py()
    target = store / victim
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    report = verify_store(str(store), progress=False)
    assert not report.ok and any(victim in p for p in report.problems), report.summary()
    assert report.checked == 3  # the other shard still verifies
    assert _run_cli("verify", str(store), "--quiet") == 1
    assert victim in capsys.readouterr().out


def test_verify_detects_a_truncated_index_part(clean_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    part = store / "index" / "000001.parquet"
    part.write_bytes(part.read_bytes()[:-20])
    report = verify_store(str(store), progress=False)
    assert any("000001.parquet" in p for p in report.problems), report.summary()
    # the shard named by the broken part is not an orphan: it is kept, with advice
    assert report.orphans == [] and len(report.kept) == 1, report.summary()
    assert any("--recover-index" in p for p in report.problems), report.summary()


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_flipped_byte_in_frames_is_caught(backend, records, tmp_path):
    store = tmp_path / "store"
    create_store(str(store), StoreSpec(backend=backend)).write_shard(0, records)
    shard = next((store / "shards").iterdir())
    if backend == "zarr":
        data_file, start, size = shard / "frames" / "c" / "0" / "0", 0, None
    else:
        import h5py

        with h5py.File(shard, "r") as f:
            start, size = f["frame_bytes"].id.get_offset(), f["frame_bytes"].shape[0]
        data_file = shard
    raw = bytearray(data_file.read_bytes())
    size = size or len(raw)
    raw[start + size // 2] ^= 0x01  # inside some clip's JPEG bytes
    data_file.write_bytes(bytes(raw))
    report = verify_store(str(store), progress=False)
    assert len(report.problems) == 1 and "checksum mismatch" in report.problems[0]


def test_info_counts_and_sizes(clean_store, records, capsys):
    info = store_info(str(clean_store))
    assert info["clips"] == len(records) and info["ok"] == 7 and info["failed"] == 2
    want = {}
    for r in records:
        want.setdefault(r.split, {}).setdefault(r.status, 0)
        want[r.split][r.status] += 1
    assert info["by_split"] == want
    files = [p for p in (clean_store / "shards").iterdir()]
    on_disk = sum(f.stat().st_size for p in files
                  for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    assert info["data_bytes"] == on_disk
    assert info["bytes_per_clip"] == pytest.approx(on_disk / 7)
    assert _run_cli("info", str(clean_store)) == 0
    out = capsys.readouterr().out
    assert "7 ok, 2 failed" in out and "schema     v1" in out
    assert "(none yet" in out  # no stats before `pipeline stats`
    assert "128 mel x 1024 frames @ 16000 Hz (compression none)" in out
    assert _run_cli("info", str(clean_store / "nope")) == 2


def test_info_text_is_readable(clean_store, records, tmp_path, capsys):
    """Every split on its own line with its statuses, sizes in human units, stats rounded."""
    from store import open_writer
    from store.info import human_bytes

    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    open_writer(str(store)).set_stats({"fbank_mean": -4.26812345678, "fbank_std": 4.5691234,
                                       "n_clips": 7, "split": "train"})
    assert _run_cli("info", str(store)) == 0
    lines = capsys.readouterr().out.splitlines()
    for split in {r.split for r in records}:
        mine = [r for r in records if r.split == split]
        line = next(x for x in lines if x.split()[0] == split)
        assert f"{len(mine)} clips:" in line
        for status in {r.status for r in mine}:
            assert f"{status} {sum(r.status == status for r in mine)}" in line
    size = next(x for x in lines if x.startswith("size"))
    per_clip = store_info(str(store))["bytes_per_clip"]
    assert f"{human_bytes(per_clip)} per ok clip" in size and " MB" in size
    stats = next(x for x in lines if x.startswith("stats"))
    assert "fbank_mean=-4.268," in stats and "fbank_std=4.569," in stats
    assert "n_clips=7" in stats and "split=train" in stats
    assert [human_bytes(v) for v in (999, 1000, 562_144, 1.2e12, 3.4e15)] == \
        ["999 B", "1 kB", "562 kB", "1.2 TB", "3400 TB"]


def test_bytes_per_ten_second_clip_within_budget(records):
    """Issue budget: <= 0.6 MB per 10-s clip at the default JPEG quality, on the shared
    video media: raw fbank + 20 frames at each clip's mean JPEG size (short clips scaled)."""
    video = [r for r in records if r.status == "ok" and r.frames]
    assert len(video) == 4
    per_clip = [1024 * 128 * 2 + 20 * np.mean([len(f) for f in r.frames]) for r in video]
    assert np.mean(per_clip) <= 0.6e6


def test_interrupted_index_write_is_an_orphan(clean_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    leftover = store / "index" / ".tmp-0123456789ab-000005.parquet"
    leftover.write_bytes(b"PAR1 half written")
    report = verify_store(str(store), progress=False)
    assert report.ok and report.orphans == ["index/" + leftover.name]
    assert verify_store(str(store), fix=True, grace_seconds=0, progress=False).removed
    assert not leftover.exists()


def test_damaged_shard_file_gives_store_error(clean_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(clean_store, store)
    row = open_store(str(store)).index().to_pylist()[0]
    shard = store / row["shard_file"]
    if shard.is_dir():  # zarr: corrupt metadata
        (shard / "fbank" / "zarr.json").write_text("{ not json")
    else:  # hdf5: truncated file
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    with pytest.raises(StoreError, match=row["shard_file"].split("/")[-1]) as err:
        open_store(str(store)).get(row["clip_id"])
    assert f"delete index/{row['shard']:06d}.parquet" in str(err.value)  # what to do
    report = verify_store(str(store), progress=False)
    assert not report.ok and row["shard_file"] in report.problems[0]


@pytest.mark.parametrize("damage", ["truncate", "index_bitrot"])
def test_damaged_zarr_chunk_file_gives_store_error(damage, records, tmp_path):
    """The direct zarr reader checks the shard index (size, CRC32C) before trusting it."""
    store = tmp_path / "store"
    create_store(str(store), StoreSpec()).write_shard(3, records)
    shard = next((store / "shards").iterdir())
    data = shard / "frames" / "c" / "0" / "0"
    raw = bytearray(data.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[-10] ^= 0x04  # inside the (offset, nbytes) table at the end of the file
    data.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"frames/c/0/0.*delete index/000003\.parquet"):
        open_store(str(store)).get("bunny")
    report = verify_store(str(store), progress=False)
    assert not report.ok and "frames/c/0/0" in report.problems[0], report.summary()
