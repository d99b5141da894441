"""report.md / report.html / PNG plots of a run, and `evaluate compare` of 1- vs 10-clip runs."""

from __future__ import annotations

import json

from eval_fixtures import save_checkpoint
from loader_fixtures import zarr_store  # noqa: F401
from PIL import Image
from test_eval_infer import SIZE, tiny

from eval.cli import main


def test_run_reports_and_compare(zarr_store, tmp_path, capsys) -> None:  # noqa: F811
    ck = save_checkpoint(tmp_path / "av.pt", "mavil_av_ft", "finetune", zarr_store,
                         model=tiny("mavil_av_ft"), num_classes=5, img_size=SIZE)
    for clips in ("1", "10"):
        rc = main(["run", "--ckpt", str(ck), "--store", zarr_store, "--out",
                   str(tmp_path / f"c{clips}"), "--split", "train", "--clips", clips,
                   "--num-workers", "0", "--quiet"])
        assert rc == 0, capsys.readouterr().err
    run = tmp_path / "c10"
    m = json.loads((run / "metrics.json").read_text())
    md = (run / "report.md").read_text()
    assert f"| {100 * m['mAP']:.2f} |" in md  # the headline is the metrics.json figure
    assert "MAViL main paper, Table 6" in md and "CAV-MAE, Table 1" in md
    assert "class 1" in md or (run / "plots" / "ap_best_worst.png").exists()
    html = (run / "report.html").read_text()
    assert "<table>" in html and "plots/pr_curves.png" in html
    for name in ("ap_best_worst", "ap_vs_frequency", "pr_curves"):
        with Image.open(run / "plots" / f"{name}.png") as img:
            assert img.size[0] > 300 and img.size[1] > 150
    rc = main(["compare", str(tmp_path / "c1"), str(run), "--out", str(tmp_path / "cmp")])
    assert rc == 0
    cmp = (tmp_path / "cmp" / "report.md").read_text()
    assert "| 1 |" in cmp and "| 10 |" in cmp and "Table 11" in cmp
    with Image.open(tmp_path / "cmp" / "plots" / "clips_1_vs_10_0.png") as img:
        assert img.size[0] > 300
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "no metrics.json" in capsys.readouterr().err
