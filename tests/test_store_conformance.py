"""One conformance suite for both backends on three filesystems: round trip, index, random
access, errors, re-runs and verify --fix -- on local disk, fsspec's in-process memory://
and a real S3 API (moto's server on 127.0.0.1, started once per session; s3_fixtures.py).

Each test that reads a store takes ``store_url`` (module-scoped: one two-shard store per
backend and filesystem) or ``new_root`` (a fresh empty location), and touches its files
only through fsspec, so the same assertions hold on every filesystem.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import pickle
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow.compute as pc
import pytest
import torch
from s3_fixtures import new_bucket, s3_server  # noqa: F401
from store_fixtures import media_records

from store import ClipRecord, StoreError, StoreSpec, create_store, open_store, open_writer
from store.index import INDEX_SCHEMA

BACKENDS = ["zarr", "hdf5"]
FILESYSTEMS = ["local", "memory", "s3"]
CASES = [(fs, b) for fs in FILESYSTEMS for b in BACKENDS]


@pytest.fixture(scope="module")
def records(media_dir: Path) -> list[ClipRecord]:
    return media_records(media_dir, StoreSpec(store_waveform=True))


@pytest.fixture(scope="module")
def roots(request, tmp_path_factory) -> Iterator[Callable[[str], str]]:
    """``roots(filesystem)`` -> a fresh, empty store location there (memory:// trees are
    removed at the end of the module; S3 buckets go with the session's server)."""
    made: list[str] = []

    def new(kind: str) -> str:
        if kind == "local":
            return str(tmp_path_factory.mktemp("store"))
        if kind == "memory":
            made.append(f"/conformance-{uuid.uuid4().hex[:12]}")
            return f"memory:/{made[-1]}"
        endpoint = request.getfixturevalue("s3_server")
        return f"s3://{new_bucket(endpoint)}/store"

    yield new
    for path in made:
        fsspec.filesystem("memory").rm(path, recursive=True)


@pytest.fixture
def new_root(request, roots) -> str:
    """A fresh location on the test's filesystem (its ``filesystem`` or ``store_url``
    parameter)."""
    params = request.node.callspec.params
    return roots(params["filesystem"] if "filesystem" in params else params["store_url"][0])


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{b}" for f, b in CASES])
def store_url(request, records, roots) -> str:
    filesystem, backend = request.param
    url = roots(filesystem)
    writer = create_store(url, StoreSpec(backend=backend, store_waveform=True))
    writer.write_shard(0, records[:5])
    writer.write_shard(7, records[5:])
    return url


def _fs(url: str) -> tuple[Any, str]:
    return fsspec.core.url_to_fs(url)


def _copy(url: str, new: str) -> None:
    """A copy of a whole store tree, on the same filesystem."""
    fs, src = _fs(url)
    _, dst = _fs(new)
    for path in fs.find(src):
        target = dst + path[len(src):]
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(target, fs.cat_file(path))


def _ok(records):
    return [r for r in records if r.status == "ok"]


def _expected_checksum(r: ClipRecord) -> str:
    h = hashlib.blake2b(digest_size=16)
    fb = np.zeros((1024, 128), "<f2") if r.fbank is None else r.fbank
    h.update(fb.astype("<f2").tobytes())
    for f in r.frames:
        h.update(f)
    if r.waveform is not None:
        h.update(r.waveform[:160000].astype("<i2").tobytes())
    return h.hexdigest()


def test_round_trip_is_bit_exact(store_url, records):
    store = open_store(store_url)
    for r in _ok(records):
        clip = store.get(r.clip_id)
        want = np.zeros((1024, 128), np.float16) if r.fbank is None else r.fbank
        assert clip.fbank.dtype.is_floating_point and tuple(clip.fbank.shape) == (1024, 128)
        assert np.array_equal(clip.fbank.numpy().view(np.uint16), want.view(np.uint16))
        assert clip.frames == r.frames
        assert (clip.height, clip.width) == (r.height, r.width)
        assert clip.labels == r.labels and clip.audio_frames == r.audio_frames
        assert (clip.has_audio, clip.has_video) == (r.has_audio, r.has_video)
        if r.waveform is None:
            assert clip.waveform is None or len(clip.waveform) == 0
        else:
            assert np.array_equal(clip.waveform.numpy(), r.waveform[:160000])


def test_index_has_one_row_per_clip_with_checksums(store_url, records):
    store = open_store(store_url)
    fs, root = _fs(store_url)
    index = store.index()
    assert index.schema.names == INDEX_SCHEMA.names
    assert index["clip_id"].to_pylist() == [r.clip_id for r in records]
    by_id = {row["clip_id"]: row for row in index.to_pylist()}
    for r in records:
        row = by_id[r.clip_id]
        assert row["status"] == r.status and row["error"] == r.error
        assert row["labels"] == r.labels and row["split"] == r.split
        assert row["shard"] == (0 if records.index(r) < 5 else 7)
        if r.status == "ok":
            assert row["row"] >= 0 and row["video_frames"] == len(r.frames)
            assert row["checksum"] == _expected_checksum(r)
            assert fs.exists(f"{root}/{row['shard_file']}")
        else:
            assert row["row"] == -1 and row["checksum"] == ""
    assert len(store) == len(records)
    assert store.shard_ids() == [0, 7]


def test_random_access_by_row_and_id_agree(store_url, records):
    store = open_store(store_url, cache_size=1)  # forces handle eviction
    ok_rows = store.filter()["index"].to_pylist()
    rng = np.random.default_rng(0)
    for i in rng.permutation(ok_rows):
        by_row = store.get(int(i))
        by_id = store.get(by_row.clip_id)
        assert by_row.index == int(i) and by_id.index == int(i)
        assert np.array_equal(by_row.fbank.numpy(), by_id.fbank.numpy())
        assert by_row.frames == by_id.frames


def test_read_shard_matches_get(store_url):
    store = open_store(store_url)
    for shard in store.shard_ids():
        clips = store.read_shard(shard)
        assert clips, "each shard has ok clips"
        for c in clips:
            single = store.get(c.clip_id)
            assert np.array_equal(c.fbank.numpy(), single.fbank.numpy())
            assert c.frames == single.frames
    rows = [c for c in store.index().to_pylist() if c["shard"] == 0 and c["row"] >= 0]
    picked = store.read_shard(0, rows=[rows[2]["row"], rows[0]["row"]])
    assert [c.clip_id for c in picked] == [rows[2]["clip_id"], rows[0]["clip_id"]]


def test_filter_by_split_status_labels(store_url, records):
    store = open_store(store_url)
    got = store.filter(split="train", labels=[137, 300])["clip_id"].to_pylist()
    want = [r.clip_id for r in records
            if r.split == "train" and r.status == "ok" and {137, 300} & set(r.labels)]
    assert got == want and want
    failed = store.filter(status="not_found")["clip_id"].to_pylist()
    assert failed == ["missing"]
    assert store.filter(status=None).num_rows == len(records)


def test_decode_frames_matches_independent_decoder(store_url):
    from io import BytesIO

    from PIL import Image

    clip = open_store(store_url).get("bunny")
    images = clip.decode_frames()
    assert tuple(images.shape) == (len(clip.frames), 3, clip.height, clip.width)
    ref = np.asarray(Image.open(BytesIO(clip.frames[3])).convert("RGB")).transpose(2, 0, 1)
    assert np.abs(images[3].numpy().astype(int) - ref.astype(int)).mean() < 2.0


def _child_read(store, clip_id, queue):
    queue.put(store.get(clip_id).fbank.float().sum().item())


@pytest.mark.parametrize("method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])
def test_store_survives_pickle_and_fork(store_url, method, request):
    """A forked child re-creates its filesystem client (s3fs's event loop is per process);
    a spawned one unpickles the store and finds S3 through the AWS_* variables alone."""
    case = request.node.callspec.params["store_url"]
    if method == "spawn" and case[0] != "local":  # ~5-15 s each on a busy 2-core box
        pytest.skip("memory:// is per process; a spawned S3 reader is the fork case's "
                    "client set-up plus the AWS_* variables the pipeline-build test uses")
    store = open_store(store_url)
    want = store.get("earth_10").fbank.float().sum().item()  # parent holds open handles
    clone = pickle.loads(pickle.dumps(store))
    assert clone.get("earth_10").fbank.float().sum().item() == want
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=_child_read, args=(store, "earth_10", queue))
    proc.start()
    got = queue.get(timeout=120)
    proc.join(60)
    assert proc.exitcode == 0 and got == want


def test_clear_errors(store_url, new_root):
    store = open_store(store_url)
    with pytest.raises(StoreError, match="unknown clip id 'nope'"):
        store.get("nope")
    with pytest.raises(StoreError, match="status 'not_found'"):
        store.get("missing")
    with pytest.raises(StoreError, match="out of range"):
        store.get(10_000)
    fs, root = _fs(store_url)
    spec = json.loads(fs.cat_file(f"{root}/store.json"))
    spec["schema_version"] = 99
    fs.pipe_file(f"{_fs(new_root)[1]}/store.json", json.dumps(spec).encode())
    with pytest.raises(StoreError, match=r"store\.json.*schema version 99 is newer"):
        open_store(new_root)
    with pytest.raises(StoreError, match="not a feature store"):
        open_store(f"{new_root}/absent")


def test_truncated_index_part_and_missing_shard(store_url, new_root):
    copy = new_root
    _copy(store_url, copy)
    fs, croot = _fs(copy)
    part = f"{croot}/index/000007.parquet"
    fs.pipe_file(part, fs.cat_file(part)[:100])
    damaged = open_store(copy)  # the other parts open; the bad one is named
    store = open_store(store_url)
    assert damaged.shard_ids() == [s for s in store.shard_ids() if s != 7]
    ((path, reason),) = damaged.unreadable_parts.items()
    assert path.endswith("index/000007.parquet") and "delete index/000007.parquet" in reason
    lost = store.index().filter(pc.equal(store.index()["shard"], 7))["clip_id"][0].as_py()
    with pytest.raises(StoreError, match=r"index/000007\.parquet is unreadable"):
        damaged.get(lost)
    row = store.index().to_pylist()[0]  # shard 0, whose index part is intact
    fs.rm(f"{croot}/{row['shard_file']}", recursive=True)
    with pytest.raises(StoreError, match=row["shard_file"].split("/")[-1]):
        open_store(copy).get(row["clip_id"])


@pytest.mark.parametrize("filesystem", FILESYSTEMS)
def test_writer_rejects_bad_records(filesystem, records, new_root):
    writer = create_store(new_root, StoreSpec())
    bad = ClipRecord("x", "x", 0, 10, "u", "train", [1], fbank=np.zeros((100, 128), "f2"))
    with pytest.raises(StoreError, match="fbank shape"):
        writer.write_shard(0, [bad])
    many = ClipRecord("y", "y", 0, 10, "u", "train", [1], frames=[b"\xff\xd8"] * 21)
    with pytest.raises(StoreError, match="21 frames"):
        writer.write_shard(0, [many])
    with pytest.raises(StoreError, match="duplicate clip ids"):
        writer.write_shard(0, [records[0], records[0]])
    assert writer.committed_shards() == set()
    with pytest.raises(StoreError, match="different spec"):
        create_store(new_root, StoreSpec(jpeg_quality=50))
    writer.write_shard(1, records[:2])
    again = create_store(new_root, StoreSpec())  # a restarted pipeline
    assert again.committed_shards() == {1}


@pytest.mark.parametrize("filesystem", FILESYSTEMS)
def test_rerun_replaces_shard_whole(filesystem, records, roots):
    """A re-run of a shard commits a new data file; older ones stay for the grace period
    (readers may hold them), then verify --fix removes them (FORMAT.md "Commit")."""
    from store.index import superseded_files
    from store.verify import verify_store

    for backend in BACKENDS:
        url = roots(filesystem)
        fs, root = _fs(url)
        writer = create_store(url, StoreSpec(backend=backend))
        first = writer.write_shard(3, records[:4])
        second = open_writer(url).write_shard(3, records[4:6])
        assert fs.exists(f"{root}/{first['shard_file']}")  # kept for older readers (grace)
        assert fs.exists(f"{root}/{second['shard_file']}")
        third = open_writer(url).write_shard(3, records[4:6])
        kept = superseded_files(writer.shard_index(3))  # both older files, still stored
        assert sorted(kept) == sorted([first["shard_file"], second["shard_file"]])
        assert third["shard_file"] not in kept
        store = open_store(url)
        assert store.index()["clip_id"].to_pylist() == [r.clip_id for r in records[4:6]]
        assert store.get(records[4].clip_id).fbank.shape == (1024, 128)
        assert writer.shard_index(3).num_rows == 2 and writer.committed_shards() == {3}
        report = verify_store(url, progress=False)
        assert report.ok and sorted(report.orphans) == sorted(kept), report.summary()
        assert verify_store(url, fix=True, progress=False).removed == []  # inside the grace
        report = verify_store(url, fix=True, grace_seconds=0, progress=False)
        assert sorted(report.removed) == sorted(kept), report.summary()
        assert not any(fs.exists(f"{root}/{f}") for f in kept)
        assert [c.clip_id for c in store.read_shard(3)] == [r.clip_id for r in records[4:6]]
        writer.set_stats({"fbank_mean": -4.2, "fbank_std": 4.5})
        assert open_store(url).spec.stats["fbank_mean"] == -4.2


@pytest.mark.parametrize("filesystem", FILESYSTEMS)
def test_zarr_library_engine_agrees_with_direct_reads(filesystem, records, new_root):
    writer = create_store(new_root, StoreSpec(store_waveform=True))
    writer.write_shard(0, records)
    direct, library = open_store(new_root), open_store(new_root, engine="zarr")
    for r in _ok(records):
        a, b = direct.get(r.clip_id), library.get(r.clip_id)
        assert np.array_equal(a.fbank.numpy(), b.fbank.numpy()) and a.frames == b.frames
        assert np.array_equal(a.waveform.numpy(), b.waveform.numpy())
    assert [c.clip_id for c in library.read_shard(0)] == [r.clip_id for r in _ok(records)]


def test_edited_index_cannot_point_outside_the_store(records, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from store.verify import verify_store

    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    store = tmp_path / "store"
    writer = create_store(str(store), StoreSpec())
    writer.write_shard(0, records[:2])
    part = store / "index" / "000000.parquet"
    table = pq.read_table(part)
    evil = pa.array(["shards/../../precious.txt"] * table.num_rows)
    pq.write_table(table.set_column(table.schema.get_field_index("shard_file"),
                                    "shard_file", evil), part)
    with pytest.raises(StoreError, match="not a shard data file name"):
        open_store(str(store)).get(records[0].clip_id)
    assert not verify_store(str(store), progress=False).ok
    writer.write_shard(0, records[:2])  # a re-run must not delete the named path
    assert outside.read_text() == "keep me"


def test_vocabulary_round_trip(audioset_dir, tmp_path):
    import pyarrow.csv as pa_csv

    vocab = pa_csv.read_csv(audioset_dir / "class_labels_indices.csv")
    create_store(str(tmp_path), StoreSpec(vocabulary={"name": "audioset"}), vocab)
    store = open_store(str(tmp_path))
    assert store.vocabulary.column_names == ["index", "mid", "display_name"]
    assert store.vocabulary["display_name"].to_pylist() == vocab["display_name"].to_pylist()
    assert store.spec.vocabulary == {"name": "audioset", "num_classes": 527}
    assert len(store) == 0 and store.filter().num_rows == 0


@pytest.mark.parametrize(("backend", "filesystem"),
                         [("zarr", "local"), ("hdf5", "local"), ("zarr", "s3")])
def test_lossless_fbank_compression(backend, filesystem, records, roots):
    """fbank_compression="lossless": same bits back, fewer bytes, verify and both zarr
    read paths agree (FORMAT.md "Size"). On S3 for Zarr only: its direct reader fetches
    blosc chunks by range; HDF5 reads them through the same file object as raw ones."""
    from store.verify import verify_store

    sizes, urls = {}, {}
    for codec in ("none", "lossless"):
        urls[codec] = roots(filesystem)
        spec = StoreSpec(backend=backend, store_waveform=True, fbank_compression=codec)
        sizes[codec] = create_store(urls[codec], spec).write_shard(0, records)["bytes"]
    store = open_store(urls["lossless"])
    engines = [store] + ([open_store(urls["lossless"], engine="zarr")]
                         if backend == "zarr" else [])
    for r in _ok(records):
        want = np.zeros((1024, 128), np.float16) if r.fbank is None else r.fbank
        for st in engines:
            clip = st.get(r.clip_id)
            assert np.array_equal(clip.fbank.numpy().view(np.uint16), want.view(np.uint16))
            assert clip.frames == r.frames
        clip.fbank[0, 0] = 1.0  # Clip.fbank owns writable memory
    audio = sum(r.has_audio for r in _ok(records))
    assert sizes["none"] - sizes["lossless"] > audio * 50_000  # > 50 kB less per real fbank
    report = verify_store(urls["lossless"], progress=False)
    assert report.ok and report.checked == len(_ok(records)), report.summary()
    with pytest.raises(StoreError, match="fbank_compression"):
        StoreSpec(fbank_compression="zip")


def test_corrupt_compressed_fbank_chunk(records, tmp_path):
    writer = create_store(str(tmp_path), StoreSpec(fbank_compression="lossless"))
    writer.write_shard(2, records)
    store = open_store(str(tmp_path))
    row = next(x for x in store.index().to_pylist() if x["clip_id"] == "speech_0")
    data = tmp_path / row["shard_file"] / "fbank" / "c" / "0" / "0" / "0"
    raw = bytearray(data.read_bytes())
    n = len(store.filter())
    table = np.frombuffer(bytes(raw[-4 - 16 * n:-4]), dtype="<u8").reshape(n, 2)
    offset = int(table[row["row"], 0])
    raw[offset + 5] ^= 0x10  # the blosc header's uncompressed size
    data.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"does not decompress.*delete index/000002\.parquet"):
        open_store(str(tmp_path)).get("speech_0")
    assert open_store(str(tmp_path)).get("bunny").clip_id == "bunny"


def test_store_restricted_to_shards_reads_only_their_index_parts(store_url, new_root):
    """A per-shard task opens the store with ``shards=[k]``: it must not read (or be broken
    by) the other parts, which at AudioSet scale are 2,000 files."""
    _copy(store_url, new_root)
    fs, root = _fs(new_root)
    fs.pipe_file(f"{root}/index/000000.parquet", b"not parquet")  # another shard's part
    copy = new_root
    whole = open_store(copy)
    whole.index()  # the other parts open, the bad one is named
    assert [p.rsplit("/", 1)[-1] for p in whole.unreadable_parts] == ["000000.parquet"]
    only7 = open_store(copy, shards=[7])
    full = open_store(store_url)
    expect = full.index().filter(pc.equal(full.index()["shard"], 7))
    assert only7.index().to_pylist() == expect.to_pylist()
    ok_rows = [r["row"] for r in expect.to_pylist() if r["status"] == "ok"]
    got = only7.read_shard(7, ok_rows)
    want = full.read_shard(7, ok_rows)
    assert [c.clip_id for c in got] == [c.clip_id for c in want]
    assert all(torch.equal(a.fbank, b.fbank) for a, b in zip(got, want, strict=True))
    with pytest.raises(StoreError, match=r"000003\.parquet is missing"):
        open_store(copy, shards=[3]).index()


# store.json as the build of 2026-12-01 (commit 8c8a3f6) wrote it for the default spec
STORE_JSON_2026_12 = {
    "audio": {
        "constant_mel_channel": 3,
        "fbank_call": "torchaudio.compliance.kaldi.fbank(wave - wave.mean(), htk_compat=True, "
                      "sample_frequency=16000, use_energy=False, window_type='hanning', "
                      "num_mel_bins=128, dither=0.0, frame_shift=10, frame_length=25, "
                      "remove_dc_offset=True, preemphasis_coefficient=0.97) then zero-pad or "
                      "cut to target_frames (store/fbank.py)",
        "mean_removed": True,
        "resampler": "ffmpeg -ac 1 -ar 16000 -f f32le (libswresample, ffmpeg defaults)"},
    "backend": "zarr", "clip_seconds": 10.0,
    "fbank": {"dither": 0.0, "frame_length_ms": 25.0, "frame_shift_ms": 10.0,
              "htk_compat": True, "num_mel_bins": 128, "preemphasis_coefficient": 0.97,
              "remove_dc_offset": True, "target_frames": 1024, "use_energy": False,
              "window_type": "hanning"},
    "fbank_compression": "none", "frame_rate": 2.0, "jpeg_quality": 85, "num_frames": 20,
    "resize_longer_side": 360, "sample_rate": 16000, "schema_version": 1,
    "shard_size": 1000, "stats": {}, "store_waveform": False, "vocabulary": {}}


def test_a_store_made_by_an_earlier_build_still_resumes(tmp_path):
    """create_store compares the whole spec: a reworded default (e.g. the recorded fbank
    call) would make every existing store refuse the next run of its build."""
    root = tmp_path / "store"
    root.mkdir()
    (root / "store.json").write_text(json.dumps(STORE_JSON_2026_12, indent=2))
    writer = create_store(str(root), StoreSpec())
    assert writer.spec.audio == STORE_JSON_2026_12["audio"]
