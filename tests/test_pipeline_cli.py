"""The `pipeline` command end to end: build-audioset on the real spreadsheet-mangled eval
CSV with a local media root, the run report and rejects report, `stats` (checked against
a direct numpy computation over the stored fbanks), the store's info/verify, and
`bench-loader` (store.bench) on a tiny setting."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pipeline_fixtures import SAMPLES, PipelineSetup, pipeline_setup  # noqa: F401

from pipeline.cli import build_parser, main
from store import open_store


@pytest.mark.slow
def test_build_audioset_mangled_csv_then_stats(audioset_dir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    mangled = audioset_dir / "eval_segments_excel_mangled.csv"
    n_name = sum(1 for ln in mangled.read_text().splitlines() if ln.startswith("#NAME?"))
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(SAMPLES / "bigbuckbunny.mp4", media / "--4gqARaEJE_0.mp4")  # pre-cut segment
    shutil.copy(SAMPLES / "speech_two_speakers.wav", media / "-0CamVQdP_Y.wav")  # whole file
    out = tmp_path / "store"
    rc = main(["build-audioset", "--segments", str(mangled), "--labels",
               str(audioset_dir / "class_labels_indices.csv"), "--media-root", str(media),
               "--out", str(out), "--engine", "local", "--workers", "1", "--limit", "4",
               "--shard-size", "2", "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rejected" in printed and "report" in printed
    report = json.loads(next((out / "reports").glob("run-*.json")).read_text())
    assert report["rejected_rows"] == n_name and report["rejects_by_reason"] == {
        "bad_id": n_name}
    assert report["status_counts_store"] == {"not_found": 2, "ok": 2}
    assert report["manifest_clips"] == 4 and report["bytes_written"] > 0
    rejects = list(csv.DictReader(open(report["rejects_report"])))
    assert len(rejects) == n_name and {r["reason"] for r in rejects} == {"bad_id"}

    store = open_store(str(out))
    rows = {r["clip_id"]: r for r in store.index().to_pylist()}
    assert rows["--4gqARaEJE_0"]["has_video"] and rows["--4gqARaEJE_0"]["labels"] == [
        72, 73, 74, 361]
    speech = rows["-0CamVQdP_Y_0"]
    assert (speech["status"], speech["has_audio"], speech["has_video"]) == ("ok", True, False)
    assert abs(speech["duration"] - 6.0) < 0.01  # end - start of the row, from a 30-s file
    assert store.vocabulary.num_rows == 527

    assert main(["stats", str(out), "--split", "eval", "--engine", "local", "--workers",
                 "1"]) == 0
    stats = json.loads((out / "store.json").read_text())["stats"]
    fb = np.stack([store.get(c).fbank.float().numpy() for c in rows
                   if rows[c]["status"] == "ok"]).astype(np.float64)
    assert stats["n_clips"] == 2 and stats["split"] == "eval"
    assert stats["fbank_mean"] == pytest.approx(fb.mean(), rel=1e-9)
    assert stats["fbank_std"] == pytest.approx(fb.std(), rel=1e-9)
    real = np.concatenate([store.get(c).fbank.float().numpy()[: rows[c]["audio_frames"]]
                           for c in rows if rows[c]["status"] == "ok"]).astype(np.float64)
    assert stats["fbank_mean_real"] == pytest.approx(real.mean(), rel=1e-9)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert main(["verify", str(out)]) == 0


def test_cli_registers_all_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {"build-audioset", "build-vggsound", "build", "stats", "bench",
                                "bench-loader", "info", "verify"}
    args = parser.parse_args(["build-audioset", "--segments", "a.csv", "--labels", "l.csv",
                              "--source", "youtube", "--out", "s"])
    assert args.engine == "auto" and args.format == "zarr" and args.source == "youtube"


def test_build_without_a_source_is_a_clear_error(audioset_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    rc = main(["build-audioset", "--segments", str(audioset_dir / "eval_segments.csv"),
               "--labels", str(audioset_dir / "class_labels_indices.csv"), "--out",
               str(tmp_path / "s"), "--engine", "local"])
    assert rc == 2 and "--media-root" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_build_vggsound_with_media_root(tmp_path: Path) -> None:
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text('---g-f_I2yQ,1,people marching,test\n'
                        '--0PQM4-hqg,30,"waterfall burbling, stream",train\n'
                        '#NAME?,3,people marching,train\n')
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(SAMPLES / "earth.mp4", media / "--0PQM4-hqg.mp4")  # whole video: 30..40 s
    out = tmp_path / "store"
    assert main(["build-vggsound", "--csv", str(csv_path), "--media-root", str(media),
                 "--out", str(out), "--engine", "local", "--workers", "1",
                 "--no-progress"]) == 0
    store = open_store(str(out))
    rows = {r["clip_id"]: r for r in store.index().to_pylist()}
    assert rows["---g-f_I2yQ_1"]["status"] == "not_found"
    ok = rows["--0PQM4-hqg_30"]
    assert ok["status"] == "ok" and ok["labels"] == [1] and ok["split"] == "train"
    assert abs(ok["duration"] - 0.53) < 0.05  # earth.mp4 is 30.53 s long
    assert store.vocabulary["display_name"].to_pylist() == [
        "people marching", "waterfall burbling, stream"]


def test_bench_loader_runs_store_bench(pipeline_setup: PipelineSetup,  # noqa: F811
                                       media_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench-loader", "--store", pipeline_setup.ref_store, "--media",
                 str(media_dir), "--samples", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rates = {}
    for line in out.splitlines():
        name, _, rest = line.strip().partition(":")
        if name.strip() in ("store", "baseline") and "samples/s" in rest:
            rates[name.strip()] = float(rest.split()[0])
    assert rates.keys() == {"store", "baseline"} and min(rates.values()) > 0, out
    ratio = float(out.split("ratio    :")[1].split("x")[0])
    assert ratio == pytest.approx(rates["store"] / rates["baseline"], rel=0.02)


def test_local_paths_reach_workers_absolute(tmp_path, monkeypatch) -> None:
    """Ray runs tasks in its own working dir: relative paths must not leave the driver."""
    from pipeline.cli import absolute_paths, build_parser

    monkeypatch.chdir(tmp_path)
    args = absolute_paths(build_parser().parse_args(
        ["build-audioset", "--segments", "a.csv", "s3://bucket/b.csv", "--labels", "l.csv",
         "--media-root", "media", "--out", "out/store"]))
    assert args.out == str(tmp_path / "out" / "store")
    assert args.media_root == str(tmp_path / "media")
    assert args.labels == str(tmp_path / "l.csv")
    assert args.segments == [str(tmp_path / "a.csv"), "s3://bucket/b.csv"]
    url = absolute_paths(build_parser().parse_args(["info", "gs://bucket/store"]))
    assert url.store == "gs://bucket/store"
