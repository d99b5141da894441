"""store/FORMAT.md is enough: read a store with zarr / h5py / pyarrow / duckdb only."""

from __future__ import annotations

import glob
import hashlib
import json

import duckdb
import h5py
import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import zarr
from store_fixtures import media_records

from store import StoreSpec, create_store


@pytest.fixture(scope="module")
def records(media_dir):
    return media_records(media_dir, StoreSpec(store_waveform=True))


@pytest.mark.parametrize("backend,compression", [("zarr", "none"), ("hdf5", "none"),
                                                 ("zarr", "lossless"), ("hdf5", "lossless")])
def test_read_store_without_our_code(backend, compression, records, tmp_path, audioset_dir):
    vocab = pa_csv.read_csv(audioset_dir / "class_labels_indices.csv")
    spec = StoreSpec(backend=backend, store_waveform=True, fbank_compression=compression)
    writer = create_store(str(tmp_path), spec, vocab)
    writer.write_shard(0, records[:6])
    writer.write_shard(12, records[6:])

    # FORMAT.md "store.json"
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["schema_version"] == 1 and meta["backend"] == backend
    assert meta["fbank"]["num_mel_bins"] == 128 and meta["fbank"]["target_frames"] == 1024
    assert meta["vocabulary"]["num_classes"] == 527

    # FORMAT.md "labels.parquet"
    labels = pq.read_table(tmp_path / "labels.parquet").to_pylist()
    assert len(labels) == 527 and labels[0] == {"index": 0, "mid": "/m/09x0r",
                                                "display_name": "Speech"}

    # FORMAT.md "Index": committed parts only, any Parquet reader
    table = pq.read_table(sorted(glob.glob(str(tmp_path / "index" / "*.parquet"))))
    assert sorted(table["clip_id"].to_pylist()) == sorted(r.clip_id for r in records)
    con = duckdb.connect()
    rows = con.execute(
        "SELECT clip_id, status, shard, shard_file, \"row\", video_frames, audio_samples, "
        "checksum FROM read_parquet(?) ORDER BY clip_id",
        [str(tmp_path / "index" / "*.parquet")]).fetchall()
    assert [r[0] for r in rows] == sorted(r.clip_id for r in records)
    failed = {r[0] for r in rows if r[1] != "ok"}
    assert failed == {"missing", "broken"}

    frame = pd.read_parquet(tmp_path / "index")  # pandas reads the folder of parts
    assert sorted(frame["clip_id"]) == sorted(r.clip_id for r in records)
    assert frame.loc[frame["clip_id"] == "bunny", "labels"].iloc[0].tolist() == [0, 137]
    if backend == "zarr":
        bunny_shard = next(r[3] for r in rows if r[0] == "bunny")
        _check_zarr_layout(tmp_path / bunny_shard, 6, compression)  # records[:6] are all ok

    want = {r.clip_id: r for r in records}
    for clip_id, status, _shard, shard_file, row, n_frames, n_samples, checksum in rows:
        if status != "ok":
            assert row == -1
            continue
        rec = want[clip_id]
        path = tmp_path / shard_file
        if backend == "zarr":
            group = zarr.open_group(str(path), mode="r")
            assert group["clip_id"][row] == clip_id
            fbank = np.asarray(group["fbank"][row])
            frames = [bytes(b) for b in group["frames"][row][:n_frames]]
            wave = np.asarray(group["waveform"][row][:n_samples])
        else:
            with h5py.File(path, "r") as f:
                assert f["clip_id"][row].decode() == clip_id
                fbank = f["fbank"][row]
                assert f["fbank"].compression == ("lzf" if compression == "lossless" else None)
                off = f["frame_offsets"][row]
                frames = [f["frame_bytes"][off[j]:off[j + 1]].tobytes()
                          for j in range(n_frames)]
                assert off[n_frames] == off[-1]  # slots after num_frames are empty
                wave = f["waveform"][row][:n_samples]
        ref = np.zeros((1024, 128), np.float16) if rec.fbank is None else rec.fbank
        assert fbank.dtype == np.float16 and np.array_equal(fbank.view(np.uint16),
                                                              ref.view(np.uint16))
        assert frames == rec.frames
        if rec.waveform is not None:
            assert np.array_equal(wave, rec.waveform[:160000])
        # FORMAT.md "Checksums"
        h = hashlib.blake2b(digest_size=16)
        h.update(fbank.astype("<f2").tobytes())
        for jpeg in frames:
            h.update(jpeg)
        h.update(wave.astype("<i2").tobytes())
        assert h.hexdigest() == checksum

    labels = con.execute("SELECT count(*) FROM read_parquet(?) WHERE list_contains(labels, 137)",
                         [str(tmp_path / "index" / "*.parquet")]).fetchall()[0][0]
    assert labels == sum(137 in r.labels for r in records)


def _check_zarr_layout(shard, n_clips: int, compression: str) -> None:
    """FORMAT.md "Zarr backend": the sharding codec, one file per array, one clip per chunk."""
    inner = {"fbank": [1, 1024, 128], "frames": [1, 20], "waveform": [1, 160000]}
    for name, chunk in inner.items():
        meta = json.loads((shard / name / "zarr.json").read_text())
        assert meta["zarr_format"] == 3 and meta["shape"][0] == n_clips
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == meta["shape"]
        (codec,) = meta["codecs"]
        assert codec["name"] == "sharding_indexed"
        assert codec["configuration"]["chunk_shape"] == chunk
        assert codec["configuration"]["index_location"] == "end"
        inner_codecs = [c["name"] for c in codec["configuration"]["codecs"]]
        if name == "frames":
            assert inner_codecs == ["vlen-bytes"]
        else:  # FORMAT.md: raw little-endian bytes, or blosc lz4hc + byte shuffle for fbank
            lossless = name == "fbank" and compression == "lossless"
            assert inner_codecs == (["bytes", "blosc"] if lossless else ["bytes"])
        files = [f for f in (shard / name).rglob("*") if f.is_file() and f.name != "zarr.json"]
        assert [f.relative_to(shard / name).as_posix() for f in files] == \
            ["c/" + "/".join(["0"] * len(chunk))]
        # the shard index: n (offset, nbytes) pairs + CRC32C, every clip's chunk present
        raw = files[0].read_bytes()
        table = np.frombuffer(raw[-4 - 16 * n_clips:-4], dtype="<u8").reshape(n_clips, 2)
        assert (table[:, 0] < len(raw)).all() and (table[:, 1] > 0).all()
