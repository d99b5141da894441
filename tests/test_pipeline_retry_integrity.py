"""--retry-failed never re-certifies damaged bytes (issue 8, item 1), and a reader that opened
the store before a --retry-failed run finishes its epoch on the old data files (item 4).

The exact report: a shard of 4 clips (``--shard-size 4``), 1 ok and 3 ``not_found``; a byte
flipped inside the ok clip's fbank chunk; the missing media added; ``build --retry-failed``.
Before the fix the retry copied the damaged clip and wrote a fresh checksum over it
(verify then passed); now the damaged clip is re-processed from its media, and the store
ends with the same index rows and shard bytes as a clean build.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pipeline_fixtures import COMPARE, SAMPLES, write_clip_manifest

from pipeline.cli import main
from store import open_store
from store.verify import verify_store

MISSING = ("later_a.mp4", "later_b.mp4", "later_c.mp4")


def _manifest(path: Path, media: Path) -> Path:
    rows = [("ok_0", "earth.mp4")] + [(f"late_{i}", n) for i, n in enumerate(MISSING)]
    return write_clip_manifest(path, media, rows)


def _build(manifest: Path, out: Path, *extra: str) -> int:
    return main(["build", "--manifest", str(manifest), "--out", str(out), "--engine",
                 "local", "--workers", "1", "--shard-size", "4", "--no-progress", *extra])


def _rows(store: str) -> list[dict]:
    rows = open_store(store).index().select(COMPARE).to_pylist()
    return sorted(rows, key=lambda r: r["clip_id"])


def _clip_bytes(store: str) -> dict[str, tuple[bytes, list[bytes]]]:
    s = open_store(store)
    out = {}
    for r in s.filter().to_pylist():
        c = s.get(r["clip_id"])
        out[r["clip_id"]] = (c.fbank.numpy().tobytes(), list(c.frames))
    return out


def _flip_fbank_byte(store: Path) -> None:
    """Flip one byte inside clip row 0's fbank chunk (Zarr: the sharded fbank file)."""
    (shard,) = (store / "shards").glob("000000-*.zarr")
    data = shard / "fbank" / "c" / "0" / "0" / "0"
    count = json.loads((shard / "fbank" / "zarr.json").read_text())["shape"][0]
    raw = bytearray(data.read_bytes())
    index = np.frombuffer(bytes(raw[-4 - 16 * count:-4]), dtype="<u8").reshape(count, 2)
    raw[int(index[0, 0]) + 5000] ^= 0xFF
    data.write_bytes(bytes(raw))


@pytest.fixture()
def media(tmp_path: Path) -> Path:
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(SAMPLES / "earth.mp4", media / "earth.mp4")
    return media


def _add_missing_media(media: Path) -> None:
    for name, src in zip(MISSING, ("bigbuckbunny.mp4", "earth.mp4", "bigbuckbunny.mp4"),
                         strict=True):
        shutil.copy(SAMPLES / src, media / name)


@pytest.mark.slow
def test_retry_failed_reprocesses_a_damaged_copied_clip(media: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    manifest = _manifest(tmp_path / "m.csv", media)
    out = tmp_path / "store"
    assert _build(manifest, out) == 0
    assert "{'not_found': 3, 'ok': 1}" in capsys.readouterr().out
    _flip_fbank_byte(out)
    report = verify_store(str(out), progress=False)
    assert not report.ok and "'ok_0' checksum mismatch" in report.summary()

    _add_missing_media(media)
    assert _build(manifest, out, "--retry-failed") == 0
    assert "statuses (store) {'ok': 4}" in capsys.readouterr().out
    report = verify_store(str(out), progress=False)
    assert report.ok and report.checked == 4, report.summary()

    clean = tmp_path / "clean"
    assert _build(manifest, clean) == 0
    assert _rows(str(out)) == _rows(str(clean))  # checksums included
    assert _clip_bytes(str(out)) == _clip_bytes(str(clean))


@pytest.mark.slow
def test_reader_opened_before_retry_finishes_its_epoch(media: Path, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m.csv", media)
    out = tmp_path / "store"
    assert _build(manifest, out) == 0
    reader = open_store(str(out))
    reader.index()  # the snapshot a training job holds
    (old_file,) = {r["shard_file"] for r in reader.filter().to_pylist()}
    _add_missing_media(media)
    assert _build(manifest, out, "--retry-failed") == 0
    # the old snapshot still reads: the replaced data file is kept for the grace period
    clip = reader.get("ok_0")
    assert reader.checksum_ok(clip)
    assert (out / old_file).exists()
    report = verify_store(str(out), fix=True, progress=False)  # default grace: 1 h
    assert report.ok and old_file in report.orphans and old_file not in report.removed
    assert (out / old_file).exists()
    report = verify_store(str(out), fix=True, grace_seconds=0, progress=False)
    assert report.ok and old_file in report.removed and not (out / old_file).exists()
    reader.close()
    fresh = open_store(str(out))
    assert len(fresh.filter()) == 4 and all(
        fresh.checksum_ok(fresh.get(r["clip_id"])) for r in fresh.filter().to_pylist())
