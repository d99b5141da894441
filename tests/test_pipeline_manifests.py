"""Manifest readers on the real AudioSet CSVs (both forms, and the spreadsheet-mangled
eval file), VGGSound rows, generic CSV/Parquet, and the rejects report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.audioset import read_class_labels, read_segments
from pipeline.generic_manifest import generic_vocabulary, read_generic
from pipeline.manifest import (
    ManifestBuilder,
    reject_counts,
    safe_clip_id,
    shard_plan,
    write_rejects,
)
from pipeline.vggsound import read_vggsound, vggsound_vocabulary


@pytest.fixture(scope="module")
def vocab(audioset_dir: Path) -> pa.Table:
    return read_class_labels(audioset_dir / "class_labels_indices.csv")


def _to_official(src: Path, dst: Path, n: int) -> None:
    """Re-write the first n rows of a re-saved CSV in the official distribution form."""
    with open(src, newline="") as f:
        rows = list(csv.reader(f))[1: n + 1]
    lines = ["# Segments csv created Sun Mar  5 10:54:31 2017",
             f"# num_ytids={n}, num_segs={n}, num_unique_labels=527, num_positive_labels=0",
             "# YTID, start_seconds, end_seconds, positive_labels"]
    lines += [f'{r[0]}, {float(r[1]):.3f}, {float(r[2]):.3f}, "{r[3]}"' for r in rows]
    dst.write_text("\n".join(lines) + "\n")


def test_vocabulary_is_the_527_classes(vocab: pa.Table) -> None:
    assert vocab.num_rows == 527
    assert vocab.column("mid")[0].as_py() == "/m/09x0r"
    assert vocab.column("display_name")[0].as_py() == "Speech"


def test_official_and_resaved_forms_agree(audioset_dir: Path, vocab: pa.Table,
                                          tmp_path: Path) -> None:
    src = audioset_dir / "balanced_train_segments.csv"
    official = tmp_path / "balanced_official.csv"
    _to_official(src, official, 300)
    a = read_segments([official], vocab, ManifestBuilder())
    b = read_segments([src], vocab, ManifestBuilder())
    assert not a.rejects and len(a.specs) == 300
    assert a.specs == b.specs[:300]
    first = a.specs[0]  # --PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
    assert (first.clip_id, first.start, first.end, first.split) == (
        "--PJHxphWEs_30", 30.0, 40.0, "train")
    mids = vocab.column("mid").to_pylist()
    assert [mids[i] for i in first.labels] == sorted(["/m/09x0r", "/t/dd00088"],
                                                     key=mids.index)


def test_full_real_files_parse_without_rejects(audioset_dir: Path, vocab: pa.Table) -> None:
    b = read_segments([audioset_dir / "balanced_train_segments.csv",
                       audioset_dir / "eval_segments.csv"], vocab, ManifestBuilder())
    assert not b.rejects
    assert len(b.specs) == 22160 + 20371
    assert {s.split for s in b.specs} == {"train", "eval"}


def test_mangled_eval_file_rejects_rows_with_reasons(audioset_dir: Path, vocab: pa.Table,
                                                     tmp_path: Path) -> None:
    mangled = audioset_dir / "eval_segments_excel_mangled.csv"
    lines = mangled.read_text().splitlines()
    n_name = sum(1 for ln in lines if ln.startswith("#NAME?"))
    n_data = sum(1 for ln in lines if not ln.startswith("# "))
    b = read_segments([mangled], vocab, ManifestBuilder())
    assert n_name > 0
    assert reject_counts(b.rejects) == {"bad_id": n_name}
    assert all(r.raw_id == "#NAME?" for r in b.rejects)
    assert len(b.specs) + len(b.rejects) == n_data
    # every accepted row (labels re-joined across columns) equals the original eval row
    orig = {s.clip_id: s for s in read_segments([audioset_dir / "eval_segments.csv"], vocab,
                                                ManifestBuilder()).specs}
    assert all(orig[s.clip_id] == s for s in b.specs)
    assert any(len(s.labels) > 1 for s in b.specs)
    out = tmp_path / "reports" / "rejects.csv"
    write_rejects(b.rejects, out)
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == n_name and rows[0]["reason"] == "bad_id" and rows[0]["line"] == "5"
    assert json.loads(out.with_suffix(".json").read_text())["counts"] == {"bad_id": n_name}


def test_invalid_rows_get_specific_reasons(vocab: pa.Table, tmp_path: Path) -> None:
    p = tmp_path / "seg.csv"
    p.write_text("\n".join([
        "YTID,start_seconds,end_seconds,positive_labels",
        '--PJHxphWEs,30.000,40.000,"/m/09x0r,/t/dd00088"',   # ok
        '#NAME?,20,30,"/m/03l9g"',                           # bad_id
        'abcdefghijk,-5,5,"/m/09x0r"',                      # negative time
        'abcdefghijl,40,30,"/m/09x0r"',                     # reversed
        'abcdefghijm,0,10,"/m/nope"',                       # unknown label
        '--PJHxphWEs,30.000,40.000,"/m/09x0r"',             # duplicate id
        'abcdefghijn,0',                                    # column count
        'abcdefghijo,zero,10,"/m/09x0r"',                   # not a number
        'abcdefghijp,0,10,"/m/09x0r",surprise',             # junk extra column
    ]) + "\n")
    b = read_segments([p], vocab, ManifestBuilder())
    assert [s.clip_id for s in b.specs] == ["--PJHxphWEs_30"]
    assert [(r.line, r.reason) for r in b.rejects] == [
        (3, "bad_id"), (4, "bad_time"), (5, "bad_time"), (6, "unknown_label"),
        (7, "duplicate_id"), (8, "column_count"), (9, "bad_time"), (10, "column_count")]


def test_vggsound_rows(tmp_path: Path) -> None:
    p = tmp_path / "vggsound.csv"
    p.write_text("\n".join([
        "---g-f_I2yQ,1,people marching,test",
        '--0PQM4-hqg,30,"waterfall burbling, stream",train',
        "--56QUhyDQM,185,playing tennis,train",
        "--56QUhyDQM,185,playing tennis,train",      # duplicate
        "#NAME?,5,playing tennis,train",            # bad id
        "--U7joUcTCo,0,playing tennis,validation",  # bad split
        "--ZhevVpy1s,0,playing tennis",             # column count
    ]) + "\n")
    vocab = vggsound_vocabulary(p)
    assert vocab.column("display_name").to_pylist() == [
        "people marching", "playing tennis", "waterfall burbling, stream"]
    b = read_vggsound(p, vocab, ManifestBuilder())
    assert [(s.clip_id, s.start, s.end, s.labels, s.split) for s in b.specs] == [
        ("---g-f_I2yQ_1", 1.0, 11.0, [0], "test"),
        ("--0PQM4-hqg_30", 30.0, 40.0, [2], "train"),
        ("--56QUhyDQM_185", 185.0, 195.0, [1], "train")]
    assert [r.reason for r in b.rejects] == ["duplicate_id", "bad_id", "bad_split",
                                             "column_count"]


def test_generic_csv_and_parquet(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "uri": "clips/a.mp4", "start": "0", "end": "10", "labels": "dog;cat",
         "split": "train"},
        {"id": "b", "uri": "https://example.org/b.mp4", "start": "", "end": "",
         "labels": "cat", "split": "eval"},
        {"id": "../etc", "uri": "x.mp4", "start": "0", "end": "1", "labels": "", "split": ""},
        {"id": "c", "uri": "", "start": "0", "end": "1", "labels": "", "split": "train"},
    ]
    p = tmp_path / "m.csv"
    with open(p, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    vocab = generic_vocabulary(p)
    assert vocab.column("display_name").to_pylist() == ["cat", "dog"]
    b = read_generic(p, vocab, ManifestBuilder())
    assert [(s.clip_id, s.labels, s.start, s.end, s.split) for s in b.specs] == [
        ("a", [0, 1], 0.0, 10.0, "train"), ("b", [0], 0.0, 10.0, "eval")]
    assert b.specs[0].uri == str(tmp_path / "clips" / "a.mp4")
    assert [r.reason for r in b.rejects] == ["bad_id", "bad_uri"]
    pq.write_table(pa.Table.from_pylist([{**rows[0], "labels": ["dog"]}]), tmp_path / "m.pq")
    b2 = read_generic(tmp_path / "m.pq", vocab, ManifestBuilder())
    assert [s.labels for s in b2.specs] == [[1]]


def test_clip_ids_never_become_paths() -> None:
    for bad in ("../x", "a/b", "/etc/passwd", ".hidden", "a\\b", "", "x" * 300, "a b"):
        assert not safe_clip_id(bad), bad
    for good in ("--PJHxphWEs_30", "clip-1.5", "abc"):
        assert safe_clip_id(good)


def test_shard_plan_is_deterministic(audioset_dir: Path, vocab: pa.Table) -> None:
    specs = read_segments([audioset_dir / "eval_segments.csv"], vocab, ManifestBuilder()).specs
    plan = shard_plan(specs, 1000)
    assert [len(s) for s in plan][:-1] == [1000] * (len(plan) - 1)
    assert [c for s in plan for c in s] == specs
