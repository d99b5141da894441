"""What only an object store has, on a real S3 API (moto's server on 127.0.0.1, through
s3fs): writers killed mid-upload, verify --fix aborting an abandoned multipart upload, the
manifest claim without atomic rename, `pipeline build --out s3://` with resume and
--retry-failed given only the AWS_* variables, and a 2-worker DataLoader reading every clip
once per epoch. The store conformance suite itself runs on S3 too
(tests/test_store_conformance.py, parametrised over local disk, memory:// and S3).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from loader_fixtures import any_store  # noqa: F401
from pipeline_fixtures import write_clip_manifest
from s3_fixtures import new_bucket, s3_bucket, s3_env, s3_server  # noqa: F401
from store_fixtures import kill_at_marker, media_records
from test_store_conformance import _ok

from store import StoreConflict, StoreSpec, create_store, open_store, open_writer
from store.verify import verify_store
from store.writer import HOLD_ENV

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "pipeline" / "sample_media"
BACKENDS = ["zarr", "hdf5"]


@pytest.fixture(scope="module")
def records(media_dir: Path):
    return media_records(media_dir, StoreSpec(store_waveform=True))


def _s3fs():
    import fsspec

    return fsspec.filesystem("s3")


WRITE_SHARD = """
import pickle, sys
from store import open_writer
print(open_writer(sys.argv[1]).write_shard(int(sys.argv[3]),
      pickle.load(open(sys.argv[2], "rb"))))
"""


def _writer(url: str, records_file: Path, shard: int, endpoint: str, hold: str = "",
            marker: Path | None = None) -> subprocess.Popen:
    env = s3_env(endpoint)  # the subprocess finds the server through AWS_* variables only
    env.pop(HOLD_ENV, None)
    if hold:
        env[HOLD_ENV] = f"{hold}:{marker}"
    return subprocess.Popen([sys.executable, "-c", WRITE_SHARD, url, str(records_file),
                             str(shard)], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _contents(url: str) -> dict[str, tuple]:
    s = open_store(url)
    rows = s.index().drop_columns(["shard_file"]).to_pylist()
    out = {r["clip_id"]: (tuple(sorted(r.items())),) for r in rows}
    for r in s.filter().to_pylist():
        c = s.get(r["clip_id"])
        out[r["clip_id"]] += (c.fbank.numpy().tobytes(), tuple(c.frames),
                              None if c.waveform is None else c.waveform.numpy().tobytes())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_writer_killed_mid_shard_on_s3(backend, records, s3_server, tmp_path):  # noqa: F811
    """Killed with part of the data uploaded ("data") or all of it but no index part
    ("commit"): no shard is visible; a re-run + verify --fix ends equal to a clean run."""
    records_file = tmp_path / "records.pkl"
    records_file.write_bytes(pickle.dumps(records))
    bucket = f"s3://{new_bucket(s3_server)}"
    url, clean = f"{bucket}/store", f"{bucket}/clean"
    spec = StoreSpec(backend=backend, store_waveform=True)
    create_store(url, spec)
    for phase in ("data", "commit"):
        marker = tmp_path / f"{phase}.pid"
        kill_at_marker(_writer(url, records_file, 3, s3_server, phase, marker), marker)
    assert _s3fs().find(f"{url}/shards"), "the killed writers did upload data objects"
    reader = open_store(url)
    assert len(reader) == 0 and reader.shard_ids() == []
    report = verify_store(url, progress=False)
    assert report.ok and len(report.orphans) == (1 if backend == "hdf5" else 2), \
        report.summary()  # HDF5 uploads the file at the end in one call: nothing at "data"
    proc = _writer(url, records_file, 3, s3_server)
    assert proc.wait(120) == 0, proc.stderr.read().decode()
    report = verify_store(url, fix=True, grace_seconds=0, progress=False)
    assert report.ok and report.checked == len(_ok(records)), report.summary()
    assert verify_store(url, progress=False).orphans == []
    create_store(clean, spec).write_shard(3, records)
    assert _contents(url) == _contents(clean)


def test_verify_fix_aborts_abandoned_multipart_upload(records, s3_bucket):  # noqa: F811
    """A writer killed inside a multipart upload (large shard objects) leaves an upload
    that S3 keeps (and bills) but never shows as an object; verify lists it, --fix aborts
    it after the grace period. Uploads outside the store's prefix are not touched."""
    url = f"{s3_bucket}/store"
    create_store(url, StoreSpec()).write_shard(0, records[:2])
    fs = _s3fs()
    bucket = s3_bucket.removeprefix("s3://")
    mine = fs.call_s3("create_multipart_upload", Bucket=bucket,
                      Key="store/shards/000001-abandoned.h5")
    other = fs.call_s3("create_multipart_upload", Bucket=bucket, Key="elsewhere/x.bin")
    fs.call_s3("upload_part", Bucket=bucket, Key="store/shards/000001-abandoned.h5",
               UploadId=mine["UploadId"], PartNumber=1, Body=b"x" * 1000)
    report = verify_store(url, progress=False)
    assert report.ok and report.uploads == ["store/shards/000001-abandoned.h5"]
    # moto reports every upload as begun in 2010: "inside the grace" needs a longer one
    assert verify_store(url, fix=True, grace_seconds=1e10, progress=False).aborted == []
    report = verify_store(url, fix=True, grace_seconds=0, progress=False)
    assert report.aborted == ["store/shards/000001-abandoned.h5"], report.summary()
    left = fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other["UploadId"]]


def test_manifest_claim_on_s3(records, s3_bucket):  # noqa: F811
    from store.claim import shard_fingerprint

    url = f"{s3_bucket}/store"
    writer = create_store(url, StoreSpec())
    mine = [shard_fingerprint(["a", "b"]), shard_fingerprint(["c"])]
    writer.claim_manifest(mine)
    writer.claim_manifest(mine + [shard_fingerprint(["d"])])  # extends: accepted
    with pytest.raises(StoreConflict, match="another manifest"):
        open_writer(url).claim_manifest([shard_fingerprint(["x"])])
    ids = [r.clip_id for r in records[:2]]  # shard 0 is claimed for ["a", "b"]
    with pytest.raises(StoreConflict, match="another manifest"):
        writer.write_shard(0, records[:2], claim=shard_fingerprint(ids))
    assert writer.committed_shards() == set()


def _build(manifest: Path, out: str, endpoint: str, *extra: str) -> subprocess.CompletedProcess:
    """`pipeline build --out s3://...` as a user runs it: only AWS_* variables set."""
    cmd = [sys.executable, "-c", "import sys; from pipeline.cli import main; "
           "sys.exit(main(sys.argv[1:]))", "build", "--manifest", str(manifest), "--out",
           out, "--engine", "local", "--workers", "1", "--shard-size", "2",
           "--no-progress", *extra]
    return subprocess.run(cmd, env=s3_env(endpoint), cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_pipeline_build_resume_and_retry_failed_on_s3(s3_server, tmp_path):  # noqa: F811
    """Three builds (each ~20-50 s of ffmpeg on a busy 2-core box): a first run with one
    clip's media missing; after shard 1's index part is deleted (a build that died before
    committing it) and the media added, one `--retry-failed` run resumes shard 1 and
    re-processes the failed clip; the store verifies and equals a clean build's."""
    import shutil

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(SAMPLES / "earth.mp4", media / "earth.mp4")
    names = [("e0", "earth.mp4"), ("late", "later.mp4"), ("e1", "earth.mp4")]
    manifest = write_clip_manifest(tmp_path / "m.csv", media, names)
    bucket = f"s3://{new_bucket(s3_server)}"
    out = f"{bucket}/store"
    done = _build(manifest, out, s3_server)
    assert done.returncode == 0, done.stderr
    assert open_store(out).filter(status="not_found")["clip_id"].to_pylist() == ["late"]
    fs = _s3fs()
    fs.rm(f"{out}/index/000001.parquet")  # as if the build had died before shard 1
    shutil.copy(SAMPLES / "bigbuckbunny.mp4", media / "later.mp4")
    retry = _build(manifest, out, s3_server, "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    report = verify_store(out, fix=True, grace_seconds=0, progress=False)
    assert report.ok and report.checked == 3 and len(report.removed) == 2, report.summary()
    clean = _build(manifest, f"{bucket}/clean", s3_server)
    assert clean.returncode == 0, clean.stderr
    assert _contents(out) == _contents(f"{bucket}/clean")


def test_dataloader_two_workers_reads_every_clip_once_on_s3(any_store, s3_bucket):  # noqa: F811
    """StreamingDataset over s3:// in a DataLoader with 2 (forked) workers: each clip once
    per epoch, and the same samples as the same store on local disk."""
    import torch
    from torch.utils.data import DataLoader

    from store.datasets import StreamingDataset
    from store.jpeg import collate
    from store.views import make_view

    url = f"{s3_bucket}/store"
    _s3fs().put(any_store, url, recursive=True)
    seen = {}
    for where in (any_store, url):
        ds = StreamingDataset(where, make_view("mavil_pretrain"), batch_size=3, seed=5)
        ds.set_epoch(1)
        loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
        batches = list(loader)
        ids = [int(i) for b in batches for i in b["index"]]
        assert sorted(ids) == sorted(int(p) for p in ds.positions) and len(ids) == 12
        seen[where] = (ids, torch.cat([b["audio"] for b in batches]))
    assert seen[url][0] == seen[any_store][0]
    assert torch.equal(seen[url][1], seen[any_store][1])


def test_ranged_reads_on_presigned_urls(records, s3_bucket, monkeypatch):  # noqa: F811
    """backends/ranges.py: byte ranges through presigned URLs equal s3fs's; an expired or
    refused URL falls back to s3fs; a batch over two shards is ONE round with one range
    per array file, and reading it then sends no further request."""
    import fsspec

    from store.backends import ranges

    fs = _s3fs()
    blob = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    path = f"{s3_bucket.removeprefix('s3://')}/blob"
    fs.pipe_file(path, blob)
    reader = ranges._presigned(fs)
    assert reader is not None, "the plain s3fs set-up takes the presigned path"
    starts, ends = [0, 5, 299_990, 100_000], [1, 70_000, 300_000, 250_000]
    got = ranges.cat_ranges(fs, [path] * 4, starts, ends)
    assert got == [blob[a:b] for a, b in zip(starts, ends, strict=True)]
    url, expires = reader.urls[path]
    reader.urls[path] = (url.replace("Signature=", "Signature=x"), expires)  # refused: 403
    assert ranges.cat_ranges(fs, [path], [10], [20]) == [blob[10:20]]
    assert ranges.cat_ranges(fs, [path + "-gone"], [0], [4])[0].__class__ is \
        FileNotFoundError  # per range, as fs.cat_ranges(on_error="return") gives it
    other = fsspec.filesystem("s3", client_kwargs={"verify": False}, skip_instance_cache=True)
    assert ranges._presigned(other) is None  # anything unusual goes through s3fs

    url = f"{s3_bucket}/store"
    writer = create_store(url, StoreSpec(store_waveform=True))
    writer.write_shard(0, records[:5])
    writer.write_shard(7, records[5:])
    store = open_store(url)
    pairs = [(r["shard"], r["row"]) for r in store.filter().to_pylist()]
    store.prefetch(pairs[:1])  # opens the shard handles (metadata, chunk indexes)
    store.prefetch(pairs[-1:])
    sent = []
    real_get = ranges._presigned(store.fs).get
    monkeypatch.setattr(ranges._presigned(store.fs), "get",
                        lambda *a: sent.append(a) or real_get(*a))
    assert store.prefetch(pairs) == 6 and len(sent) == 6  # 2 shards x 3 array files
    for shard in (0, 7):
        rows = [row for s, row in pairs if s == shard]
        clips = store.read_shard(shard, rows)
        assert [c.clip_id for c in clips] == [r.clip_id for r in _ok(records)
                                              if r.clip_id in {c.clip_id for c in clips}]
    assert len(sent) == 6, "the reads used the prefetched chunks"
    for c in clips:
        want = next(r for r in records if r.clip_id == c.clip_id)
        assert c.frames == want.frames
