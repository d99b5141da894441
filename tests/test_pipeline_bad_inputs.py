"""Bad manifest rows, unbounded windows and still images (issue 8, items 7, 11, 13).

Each case is the report's reproduction: before the fix a label ``²`` or a Latin-1 byte
aborted the build without a line number, a field over 131,072 characters raised an
uncaught ``_csv.Error``, a null Parquet id became the clip ``"None"``, ``1_0`` was read as
10, a ``0,1e12`` window decoded a whole file, ``end = 1e-300`` stored the whole file and a
start past the end stored its last seconds, and a still image failed as "no decodable
audio or video".
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.ffmpeg_bin import ffmpeg_exe
from pipeline.generic_manifest import read_generic
from pipeline.manifest import ClipSpec, ManifestBuilder, vocabulary_table
from pipeline.shard_task import ShardJob, process_shard
from store import StoreSpec, create_store, open_store

SAMPLES = Path(__file__).resolve().parents[1] / "pipeline" / "sample_media"


def test_bad_csv_rows_are_rejected_with_line_and_the_build_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    earth = SAMPLES / "earth.mp4"
    lines = [b"id,uri,start,end,labels,split",
             f"good,{earth},0,2,dog,train".encode(),
             f"super,{earth},0,2,\u00b2,train".encode(),                    # label "²"
             f'huge,{earth},0,2,"{"x" * 131_073}",train'.encode(),        # csv field limit
             f"latin,{earth},0,2,caf".encode() + b"\xe9,train",            # Latin-1 byte
             f"under,{earth},1_0,12,dog,train".encode(),                   # float("1_0") = 10
             f"wide,{earth},0,1e12,dog,train".encode(),                    # unbounded window
             f"tiny,{earth},0,1e-300,dog,train".encode(),                  # (almost) empty
             f"good2,{earth},2,4,dog;cat,train".encode()]
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "store"
    rc = main(["build", "--manifest", str(manifest), "--out", str(out), "--engine", "local",
               "--workers", "1", "--no-progress", "--report-dir", str(tmp_path / "rep")])
    assert rc == 0
    assert "statuses (store) {'ok': 2}" in capsys.readouterr().out
    report = next((tmp_path / "rep").glob("rejects-*.json"))
    rows = {r["line"]: (r["file"], r["reason"], r["detail"])
            for r in json.loads(report.read_text())["rows"]}
    assert set(rows) == {3, 4, 5, 6, 7, 8}
    assert all(f == "m.csv" for f, _, _ in rows.values())
    assert rows[3][1:] == ("unknown_label", "label '²' is neither an index (ASCII digits) "
                                            "nor a name")
    assert rows[4][1] == "bad_row" and "field larger than field limit (131072)" in rows[4][2]
    assert rows[5][1:] == ("bad_encoding", "not UTF-8: byte 0xe9 at column "
                           f"{len(f'latin,{earth},0,2,caf') + 1}")
    assert rows[6][1] == "bad_time" and "not a number: '1_0'" in rows[6][2]
    assert rows[7][1] == "bad_time" and "longer than the store's 10-s clips" in rows[7][2]
    assert rows[8][1] == "bad_time" and "shorter than 0.025 s" in rows[8][2]
    ids = sorted(open_store(str(out)).index()["clip_id"].to_pylist())
    assert ids == ["good", "good2"]


def test_null_parquet_id_is_a_rejected_row(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["a", None, "c"], "uri": ["x.mp4", "y.mp4", "z.mp4"],
                             "start": [0.0, 0.0, None], "end": [2.0, 2.0, None]}), path)
    b = read_generic(path, vocabulary_table([]), ManifestBuilder())
    assert [s.clip_id for s in b.specs] == ["a", "c"]
    assert [(s.start, s.end) for s in b.specs] == [(0.0, 2.0), (0.0, 10.0)]
    assert [(r.file, r.line, r.reason, r.detail) for r in b.rejects] == [
        ("m.parquet", 3, "bad_id", "empty (null) id")]


def test_windows_past_the_end_or_empty_fail_and_long_ones_are_cut(tmp_path: Path) -> None:
    """ClipSpecs given directly (not from a manifest): the shard task cuts a window to the
    store's clip length + 1 s, and a start past the end of the 7.1-s file is an error."""
    house = str(SAMPLES / "house_lo.ogg")
    clips = [ClipSpec(f"s{int(s)}", "h", s, s + 5, house, [0]) for s in (20.0, 100.0, 1e6)]
    clips += [ClipSpec("tiny", "h", 0.0, 1e-300, house, [0]),
              ClipSpec("wide", "e", 0.0, 1e12, str(SAMPLES / "earth.mp4"), [0]),
              ClipSpec("tail", "h", 6.0, 11.0, house, [0])]
    root = tmp_path / "store"
    create_store(str(root), StoreSpec(), None)
    process_shard(ShardJob(str(root), 0, clips))
    rows = {r["clip_id"]: r for r in open_store(str(root)).index().to_pylist()}
    for cid, start in [("s20", "20"), ("s100", "100"), ("s1000000", "1e+06")]:
        assert rows[cid]["status"] == "decode_error"
        assert rows[cid]["error"] == (f"window starts at {start} s, at or past the end of "
                                      "the 7.10-s file")
    assert rows["tiny"]["status"] == "decode_error" and "empty window" in rows["tiny"]["error"]
    assert rows["wide"]["status"] == "ok" and rows["wide"]["duration"] <= 11.0
    assert rows["tail"]["status"] == "ok" and 1.0 < rows["tail"]["duration"] < 1.2


@pytest.mark.parametrize("name", ["one.mp4", "still.png", "still.jpg"])
def test_still_image_is_rejected_with_that_reason(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=25", "-frames:v", "1", str(path)], check=True)
    root = tmp_path / "store"
    create_store(str(root), StoreSpec(), None)
    process_shard(ShardJob(str(root), 0, [ClipSpec("still", "still", 0, 10, str(path), [0])]))
    row = open_store(str(root)).index().to_pylist()[0]
    assert row["status"] == "decode_error"
    assert row["error"] == ("still image or 1-frame video without audio: no frame at 2 fps "
                            "(not stored)")
