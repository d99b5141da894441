"""The loader benchmark runs end to end on a real store and reports sane figures.

(Speed itself is judged by running `python -m store.bench`, not by a timed test.)"""

from __future__ import annotations

from pathlib import Path

from loader_fixtures import zarr_store  # noqa: F401

from store.bench import main, run_bench, usable_cores


def test_bench_runs_on_a_given_store(zarr_store: str, media_dir: Path) -> None:  # noqa: F811
    lines: list[str] = []
    res = run_bench(zarr_store, media_dir, samples=3, rounds=1, log=lines.append, workers=2,
                    batch_size=2)
    for side in ("store", "store_float", "baseline"):
        assert res[f"{side}_samples_per_s"] > 0 and res[f"{side}_cpu_ms"] > 0
    assert abs(res["ratio"] - res["store_samples_per_s"] / res["baseline_samples_per_s"]) < 1e-9
    assert res["loader_samples_per_s"] > 0 and res["loader_workers"] == 2
    want = res["loader_samples_per_s"] / (2 * res["store_samples_per_s"])
    assert abs(res["loader_efficiency"] - want) < 1e-9
    assert res["loader_plain_samples_per_s"] > 0  # the plain DataLoader baseline, same run
    assert res["loader_main_cpu_ms"] <= res["loader_cpu_ms"]
    # 2 independent one-worker loops at once: the machine's figure for 2 processes
    assert res["parallel_samples_per_s"] > 0
    # the same work as the one-worker figure (not a loop that skipped it): CPU per sample
    # within a wide band of it (contention on a busy box costs CPU, it does not halve it)
    assert 0.3 < res["parallel_cpu_ms"] / res["store_cpu_ms"] < 4
    assert abs(res["loader_of_parallel"] - res["loader_samples_per_s"]
               / res["parallel_samples_per_s"]) < 1e-9
    # the DataLoader floor (no data handed over) does the workers' work all the same
    assert 0.3 < res["loader_floor_cpu_ms"] / res["store_cpu_ms"] < 4
    assert res["loader_floor_main_cpu_ms"] <= res["loader_floor_cpu_ms"]
    assert any(line.strip().startswith("floor") for line in lines)
    assert any(line.strip().startswith("parallel") for line in lines)
    assert any(line.strip().startswith("plain") for line in lines)
    assert any(line.strip().startswith("ratio") for line in lines)
    assert any(line.strip().startswith("loader") for line in lines)
    # 2 workers + the main process: said when they do not fit on this machine's cores
    noted = any(line.strip().startswith("note") for line in lines)
    assert noted == (3 > usable_cores())


def test_bench_of_the_gpu_decode_path_runs_its_loader_side(zarr_store: str,  # noqa: F811
                                                            media_dir: Path) -> None:
    """--decode gpu: workers hand over JPEG bytes and crop plans (no video tensor)."""
    lines: list[str] = []
    res = run_bench(zarr_store, media_dir, samples=2, rounds=1, log=lines.append, workers=1,
                    batch_size=2, decode="gpu")
    assert res["loader_samples_per_s"] > 0 and res["loader_plain_samples_per_s"] > 0
    assert res["loader_floor_samples_per_s"] > 0 and res["store_samples_per_s"] > 0
    assert any("loader side of the GPU decode path" in line for line in lines)


def test_bench_cli_help(capsys) -> None:
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "--workers" in capsys.readouterr().out
