"""The backend benchmark command runs end to end and prints every configuration.

(Speed is judged by running `python -m store.backends.bench`, not by a timed test.)"""

from __future__ import annotations

import re
from pathlib import Path

from store.backends.bench import main


def test_backend_bench_prints_ratios_for_every_reader(media_dir: Path, capsys) -> None:
    assert main(["--media", str(media_dir), "--skip-size", "--clips", "4", "--reads", "8",
                 "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"baseline os\.pread of \d+ B: [\d.]+ ms/clip", out)
    sizes = {}
    for backend, engine, codec in (("zarr", "auto", "none"), ("zarr", "auto", "lossless"),
                                   ("zarr", "zarr", "none"), ("hdf5", "auto", "none"),
                                   ("hdf5", "auto", "lossless")):
        m = re.search(rf"{backend}\s+engine={engine}\s+fbank={codec}\s*: [\d.]+ ms/clip = "
                      r"[\d.]+x baseline .*; ([\d.]+) MB/clip on disk", out)
        assert m, out
        sizes[backend, engine, codec] = float(m.group(1))
    for backend in ("zarr", "hdf5"):  # real speech fbanks compress
        assert sizes[backend, "auto", "lossless"] < sizes[backend, "auto", "none"] - 0.05
