"""`pipeline build-esc50` on a small ESC-50-master tree in the official layout (real audio
cut with ffmpeg): folds as splits, the official class list, 512 stored frames, and bad
layouts (no meta file, a listed file missing, a row that disagrees with its name)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from short_clip_fixtures import make_esc50

from pipeline.cli import main
from pipeline.esc50 import CATEGORIES, fold_splits, read_esc50
from pipeline.manifest import ManifestBuilder
from store import open_store


@pytest.fixture(scope="module")
def esc_root(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Path:
    return make_esc50(tmp_path_factory.mktemp("esc"), media_dir)


@pytest.fixture(scope="module")
def esc_store(esc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("esc_store") / "store")
    rc = main(["build-esc50", "--root", str(esc_root), "--out", out, "--engine", "local",
               "--workers", "2", "--shard-size", "5", "--no-progress"])
    assert rc == 0
    return out


def test_official_class_list() -> None:
    assert len(CATEGORIES) == 50 == len(set(CATEGORIES))
    # spot checks against meta/esc50.csv rows of the release
    assert (CATEGORIES[0], CATEGORIES[14], CATEGORIES[36]) == (
        "dog", "chirping_birds", "vacuum_cleaner")


def test_build_keeps_folds_and_classes(esc_store: str, esc_root: Path) -> None:
    store = open_store(esc_store)
    assert store.spec.target_frames == 512 and store.spec.clip_seconds == 5.0
    assert store.spec.vocabulary == {"name": "esc50", "num_classes": 50}
    assert store.vocabulary["display_name"].to_pylist() == list(CATEGORIES)
    rows = store.index().to_pylist()
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 10
    with open(esc_root / "meta" / "esc50.csv", newline="") as f:
        meta = {r["filename"][:-4]: r for r in csv.DictReader(f)}
    for r in rows:
        m = meta[r["clip_id"]]
        assert r["split"] == f"fold{m['fold']}" and r["labels"] == [int(m["target"])]
        assert r["audio_frames"] == 498  # 5 s at 16 kHz: (80000 - 400) // 160 + 1
    clip = store.get(0)
    assert tuple(clip.fbank.shape) == (512, 128)
    assert float(clip.fbank[498:].abs().max()) == 0.0  # zero padding after the real frames


def test_fold_selection(esc_store: str) -> None:
    store = open_store(esc_store)
    for k in range(1, 6):
        train, test = fold_splits(k)
        tr, te = store.filter(split=train), store.filter(split=test)
        assert te.num_rows == 2 and tr.num_rows == 8
        assert set(te["split"].to_pylist()) == {f"fold{k}"}
        assert f"fold{k}" not in set(tr["split"].to_pylist())
    with pytest.raises(ValueError, match="1..5"):
        fold_splits(6)


def test_missing_meta_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "audio").mkdir()
    rc = main(["build-esc50", "--root", str(tmp_path), "--out", str(tmp_path / "s"),
               "--engine", "local", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "meta/esc50.csv not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_bad_rows_are_rejected(esc_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "ESC-50-master"
    shutil.copytree(esc_root, root)
    meta = root / "meta" / "esc50.csv"
    lines = meta.read_text().splitlines()
    first = lines[1].split(",")
    (root / "audio" / first[0]).unlink()                          # listed, not on disk
    lines.append("1-999999-A-0.wav,1,0,cat,True,999999,A")         # target 0 is dog
    lines.append("2-999998-A-46.wav,1,46,church_bells,False,999998,A")  # name says fold 2
    lines.append("3-999997-A-7.wav,3,7")                            # short row
    meta.write_text("\n".join(lines) + "\n")
    b = read_esc50(root, ManifestBuilder())
    assert len(b.specs) == 9
    reasons = {(r.line, r.reason) for r in b.rejects}
    assert reasons == {(2, "bad_uri"), (12, "unknown_label"), (13, "bad_id"),
                       (14, "column_count")}
    missing = next(r for r in b.rejects if r.reason == "bad_uri")
    assert "does not exist" in missing.detail and missing.file == "meta/esc50.csv"


def test_rejects_reach_the_report(esc_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "ESC-50-master"
    shutil.copytree(esc_root, root)
    meta = root / "meta" / "esc50.csv"
    meta.write_text(meta.read_text().splitlines()[0] + "\n"
                    + "\n".join(meta.read_text().splitlines()[1:3]) + "\n"
                    + "4-1-A-0.wav,4,0,dog,True,1,A\n")
    out = tmp_path / "s"
    assert main(["build-esc50", "--root", str(root), "--out", str(out), "--engine", "local",
                 "--no-progress"]) == 0
    report = json.loads(next((out / "reports").glob("run-*.json")).read_text())
    assert report["manifest_clips"] == 2 and report["rejects_by_reason"] == {"bad_uri": 1}
