"""`evaluate bench` runs and reports its parts and ratios (no timing thresholds here: speed
figures come from the command's own same-run ratios, README)."""

from __future__ import annotations

from loader_fixtures import zarr_store  # noqa: F401

from eval.cli import main


def test_bench_reports_ratios(zarr_store, capsys) -> None:  # noqa: F811
    assert main(["bench", "--store", zarr_store, "--clips-per-run", "2", "--batch-size", "2",
                 "--repeats", "1", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "clips/s 1-clip" in out and "measured/predicted" in out
    assert "ten full forwards" in out
