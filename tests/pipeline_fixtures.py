"""Shared pipeline test material: an 8-clip manifest over the bundled sample media and its
reference store (an uninterrupted, in-process run), built once per session."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.generic_manifest import generic_vocabulary, read_generic
from pipeline.manifest import ManifestBuilder, shard_plan
from pipeline.shard_task import ShardJob, process_shard
from store import StoreSpec, create_store, open_store

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "pipeline" / "sample_media"
SHARD = 2
COMPARE = ["clip_id", "source_id", "start", "end", "uri", "split", "labels", "status",
           "error", "shard", "row", "audio_frames", "video_frames", "height", "width",
           "has_audio", "has_video", "duration", "checksum"]


@dataclass
class PipelineSetup:
    tmp: Path
    media: Path                 # a private copy of the sample media (tests may add files)
    manifest: Path
    builder: ManifestBuilder
    vocab: pa.Table
    ref: list[dict]             # index rows of the reference store (COMPARE columns)
    ref_store: str              # 4 shards of 2 clips; 4 clips have audio and video


def write_manifest(path: Path, media: Path) -> Path:
    rows = [("bunny_0", "bigbuckbunny.mp4", 0, 2), ("bunny_2", "bigbuckbunny.mp4", 2, 4),
            ("earth_0", "earth.mp4", 0, 2), ("earth_10", "earth.mp4", 10, 12),
            ("city", "cityCC0_cut.mpg", 0, 2), ("speech", "speech_two_speakers.wav", 3, 5),
            ("house", "house_lo.ogg", 0, 2), ("gone", "missing.mp4", 0, 2)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end", "labels", "split"])
        for cid, name, s, e in rows:
            w.writerow([cid, str(media / name), s, e, "a;b" if s else "a", "train"])
    return path


def write_clip_manifest(path: Path, media: Path, names: list[tuple[str, str]]) -> Path:
    """A manifest of (clip id, media file name) rows: 0-2 s, label "a", split train."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end", "labels", "split"])
        for cid, name in names:
            w.writerow([cid, str(media / name), 0, 2, "a", "train"])
    return path


def index_rows(store: str) -> list[dict]:
    table = open_store(store).index().select(COMPARE)
    return sorted(table.to_pylist(), key=lambda r: r["clip_id"])


def reference_store(root: Path, manifest: Path, vocab: pa.Table) -> str:
    """An uninterrupted run: every planned shard processed once, in order, in-process."""
    create_store(str(root), StoreSpec(shard_size=SHARD), vocab)
    specs = read_generic(manifest, vocab, ManifestBuilder()).specs
    for sid, clips in enumerate(shard_plan(specs, SHARD)):
        process_shard(ShardJob(str(root), sid, clips))
    return str(root)


_BUILT: dict[str, PipelineSetup] = {}


@pytest.fixture(scope="session")
def pipeline_setup(tmp_path_factory: pytest.TempPathFactory) -> PipelineSetup:
    # each test module that imports this fixture gets its own fixture definition; the
    # cache makes the material really once per session
    if "setup" not in _BUILT:
        _BUILT["setup"] = _build(tmp_path_factory)
    return _BUILT["setup"]


def _build(tmp_path_factory: pytest.TempPathFactory) -> PipelineSetup:
    tmp = tmp_path_factory.mktemp("pipeline")
    media = tmp / "media"
    shutil.copytree(SAMPLES, media)
    manifest = write_manifest(tmp / "manifest.csv", media)
    vocab = generic_vocabulary(manifest)
    builder = read_generic(manifest, vocab, ManifestBuilder())
    ref_store = reference_store(tmp / "reference", manifest, vocab)
    return PipelineSetup(tmp, media, manifest, builder, vocab, index_rows(ref_store),
                         ref_store)
