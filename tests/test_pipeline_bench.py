"""`pipeline bench` accounting on one real clip: the floor is measured, the stage split adds
up to the full path, and the ratio is full / floor. (Speed itself is judged by running the
benchmark, never by a timed test.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pipeline_fixtures import SAMPLES

from pipeline.bench import STAGES, VARIANTS, bench_media, format_bench

torch.set_num_threads(1)


@pytest.mark.slow
def test_bench_figures_are_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SAMPLES)  # `pipeline bench --media` takes relative paths too
    res = bench_media([Path("bigbuckbunny.mp4")], 1, None)  # 5.3 s, audio + video
    assert res["clips"] == 1 and res["floor_cpu_s_per_clip"] > 0
    assert set(res["variants"]) == set(VARIANTS)
    for v in res["variants"].values():
        stages = v["stages_s_per_clip"]
        assert set(stages) == set(STAGES) and min(stages.values()) >= 0
        assert sum(stages.values()) == pytest.approx(v["full_cpu_s_per_clip"], rel=1e-6)
        assert v["ratio_to_floor"] == pytest.approx(
            v["full_cpu_s_per_clip"] / res["floor_cpu_s_per_clip"], rel=1e-9)
        assert v["bytes_per_clip"] > 1024 * 128 * 2 + 11 * 5_000  # fbank + 11 JPEG frames
    text = format_bench(res)
    assert "floor" in text and all(f"jpeg={name}" in text for name in VARIANTS)


def test_machine_ceiling_is_a_two_process_speedup(media_dir) -> None:
    """Serial wall time over parallel wall time for two processes: between 1/2 (a badly
    loaded box) and 2 (two independent cores), never outside."""
    from pipeline.bench import machine_ceiling

    ceiling = machine_ceiling([media_dir / "house_lo.ogg", media_dir / "earth.mp4"])
    assert 0.5 < ceiling < 2.2
