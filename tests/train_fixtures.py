"""A small store built by the pipeline from the shared media, for the trainer tests.

16 clips of 4 s (cut from the five files of ``../shared/data/media``): audio+video (bunny,
earth), video without audio (cityCC0) and audio without video (speech, house), five labels
by source, 13 train / 3 eval, 4 per shard. Built once per session with the pipeline's own shard task.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipeline.generic_manifest import generic_vocabulary, read_generic
from pipeline.manifest import ManifestBuilder, shard_plan
from pipeline.shard_task import ShardJob, process_shard
from store import StoreSpec, create_store

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
    vocab = generic_vocabulary(manifest)
    create_store(str(root), StoreSpec(shard_size=4, backend=backend), vocab)
    specs = read_generic(manifest, vocab, ManifestBuilder()).specs
    for sid, clips in enumerate(shard_plan(specs, 4)):
        process_shard(ShardJob(str(root), sid, clips))
    return str(root)


@pytest.fixture(scope="session")
def train_store(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    if "zarr" not in _CACHE:
        _CACHE["zarr"] = build_train_store(tmp_path_factory.mktemp("train") / "store", media_dir)
    return _CACHE["zarr"]
