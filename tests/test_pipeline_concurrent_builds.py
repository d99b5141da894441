"""Two builds into one store (issue 8, item 3).

Before the fix, two concurrent `pipeline build`s of different manifests into one store both
exited 0 and both printed ``statuses (store) {'ok': 8}``, but the store held only the second
one's clips. Now the store records which clips each shard id stands for (manifest.json,
created exclusively) and every commit checks it: exactly one of the two builds runs, the
other is refused with a clear message and the store holds the winner's clips, verified.
Two concurrent builds of the same manifest both succeed and give the uninterrupted result.
Which build wins the race is up to the scheduler; the test holds for either.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_fixtures import (  # noqa: F401
    REPO,
    SHARD,
    PipelineSetup,
    index_rows,
    pipeline_setup,
)

from store import StoreConflict, StoreSpec, create_store, open_store, shard_fingerprint
from store.verify import verify_store


def _build_cmd(manifest: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "build", "--manifest", str(manifest),
            "--out", str(out), "--engine", "local", "--workers", "1", "--shard-size",
            str(SHARD), "--no-progress"]


def _run_together(*cmds: list[str]) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in cmds]
    out = []
    for p, c in zip(procs, cmds, strict=True):
        stdout, stderr = p.communicate(timeout=600)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def _renamed_manifest(src: Path, dst: Path, prefix: str) -> Path:
    rows = list(csv.DictReader(open(src)))
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "id": prefix + r["id"]})
    return dst


@pytest.mark.slow
def test_concurrent_builds_of_different_manifests(pipeline_setup: PipelineSetup,  # noqa: F811
                                                  tmp_path: Path) -> None:
    s = pipeline_setup
    other = _renamed_manifest(s.manifest, tmp_path / "other.csv", "b_")
    out = tmp_path / "store"
    a, b = _run_together(_build_cmd(s.manifest, out), _build_cmd(other, out))
    assert sorted([a.returncode, b.returncode]) == [0, 2], (a.stderr[-2000:], b.stderr[-2000:])
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    assert "statuses (store) {'not_found': 1, 'ok': 7}" in winner.stdout
    assert "from another manifest" in loser.stderr and "use another --out" in loser.stderr
    assert "Traceback" not in loser.stderr
    ids = {r["clip_id"] for r in index_rows(str(out))}
    prefix = "" if winner is a else "b_"
    assert ids == {prefix + r["clip_id"] for r in s.ref}
    if winner is a:
        assert index_rows(str(out)) == s.ref
    report = verify_store(str(out), progress=False)
    assert report.ok, report.summary()


@pytest.mark.slow
def test_concurrent_builds_of_the_same_manifest_stay_safe(
        pipeline_setup: PipelineSetup, tmp_path: Path) -> None:  # noqa: F811
    s = pipeline_setup
    out = tmp_path / "store"
    a, b = _run_together(_build_cmd(s.manifest, out), _build_cmd(s.manifest, out))
    assert a.returncode == 0 and b.returncode == 0, (a.stderr[-2000:], b.stderr[-2000:])
    assert index_rows(str(out)) == s.ref
    assert verify_store(str(out), progress=False).ok


@pytest.mark.parametrize("url", ["local", "memory://claims"])
def test_claim_and_commit_checks(url: str, tmp_path: Path) -> None:
    """The claim refuses another manifest up front; a commit checks it again (the object
    store race: a later build overwrote the claim) and never replaces a committed shard of
    other clips. A longer manifest that extends the claim is accepted."""
    import fsspec

    from store import ClipRecord

    path = str(tmp_path / "s") if url == "local" else url
    try:
        writer = create_store(path, StoreSpec(shard_size=2))
        a = [shard_fingerprint(["a0", "a1"]), shard_fingerprint(["a2"])]
        b = [shard_fingerprint(["b0", "b1"])]
        writer.claim_manifest(a)
        writer.claim_manifest(a[:1])  # a shorter view of the same manifest (--limit)
        with pytest.raises(StoreConflict, match="from another manifest"):
            writer.claim_manifest(b)
        rec = [ClipRecord(c, c, 0, 1, "u", "train", [], status="not_found")
               for c in ("a0", "a1")]
        writer.write_shard(0, rec, claim=a[0])
        with pytest.raises(StoreConflict, match="shard 0 of"):  # other clips on shard 0
            other = [ClipRecord(c, c, 0, 1, "u", "train", [], status="not_found")
                     for c in ("b0", "b1")]
            writer.write_shard(0, other, claim=b[0])
        fs = writer.fs
        fs.pipe_file(f"{writer.root}/manifest.json", b'{"shards": ["%s"]}' % b[0].encode())
        with pytest.raises(StoreConflict):  # the claim changed under a running build
            writer.write_shard(0, rec, claim=a[0])
        assert open_store(path).index()["clip_id"].to_pylist() == ["a0", "a1"]
    finally:
        if url != "local":
            fsspec.filesystem("memory").rm("/claims", recursive=True)
