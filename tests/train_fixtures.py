"""A small store built by the pipeline from the shared media, for the trainer tests.

16 clips of 4 s (cut from the five files of ``../shared/data/media``): audio+video (bunny,
earth), video without audio (cityCC0) and audio without video (speech, house), five labels
by source, 13 train / 3 eval, 4 per shard. Built once per session by the `pipeline build`
command in its own process (an in-process build after hundreds of other tests once hung in
zarr's I/O thread).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

CLIPS = [  # id, file, start, labels, split
    ("bunny_0", "bigbuckbunny.mp4", 0, "animation", "train"),
    ("bunny_1", "bigbuckbunny.mp4", 1, "animation;music", "train"),
    ("earth_0", "earth.mp4", 0, "nature", "train"),
    ("earth_4", "earth.mp4", 4, "nature", "train"),
    ("earth_8", "earth.mp4", 8, "nature", "train"),
    ("earth_12", "earth.mp4", 12, "nature;music", "train"),
    ("earth_16", "earth.mp4", 16, "nature", "train"),
    ("earth_20", "earth.mp4", 20, "nature", "train"),
    ("city_0", "cityCC0.mpg", 0, "street", "train"),
    ("speech_0", "speech_two_speakers.wav", 0, "speech", "train"),
    ("speech_10", "speech_two_speakers.wav", 10, "speech", "train"),
    ("house_0", "house_lo.ogg", 0, "music", "train"),
    ("house_4", "house_lo.ogg", 4, "music", "train"),
    ("earth_24", "earth.mp4", 24, "nature", "eval"),
    ("city_3", "cityCC0.mpg", 3, "street", "eval"),
    ("speech_20", "speech_two_speakers.wav", 20, "speech", "eval"),
]
SECONDS = 4
_CACHE: dict[str, str] = {}


def build_train_store(root: Path, media: Path, backend: str = "zarr") -> str:
    manifest = root.parent / f"{root.name}_manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end", "labels", "split"])
        for cid, name, start, labels, split in CLIPS:
            w.writerow([cid, str(media / name), start, start + SECONDS, labels, split])
    cmd = [sys.executable, "-m", "pipeline.cli", "build", "--manifest", str(manifest),
           "--out", str(root), "--format", backend, "--shard-size", "4", "--engine", "local",
           "--workers", "2", "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return str(root)


@pytest.fixture(scope="session")
def train_store(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    if "zarr" not in _CACHE:
        _CACHE["zarr"] = build_train_store(tmp_path_factory.mktemp("train") / "store", media_dir)
    return _CACHE["zarr"]
