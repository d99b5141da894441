"""A store of the generated labelled set (pipeline/synthetic.py), built once per session
and shared by the pipeline, trainer, eval and workflow tests.

    def test_x(synthetic_store: SyntheticStore): ...          # SYNTHETIC_CLIPS clips, seed 0
    def test_y(synthetic_store_factory): s = synthetic_store_factory(160, seed=1)

(both fixtures are registered in conftest.py). Each set is made with `pipeline
make-synthetic`, built with `pipeline build --engine local` (real ffmpeg, the user's
path) and measured with `pipeline stats` (fbank mean/std of the train split in
store.json). ``MAVIL_SYNTHETIC_CACHE=DIR`` keeps the sets under DIR between sessions
(reused only when the store is complete: every planned clip committed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.synthetic import CLASSES, FORMAT_VERSION, make_synthetic
from store import StoreError, open_store

SYNTHETIC_CLIPS = 48  # 38 train / 10 eval; ~10 s to make and ~15 s to build on 2 busy cores
SHARD_SIZE = 16


@dataclass
class SyntheticStore:
    root: Path          # the generated set: media/, manifest.csv, labels.csv, synthetic.json
    store: str          # the store built from it (zarr, shards of SHARD_SIZE clips)
    meta: dict          # synthetic.json: parameters, label_prior, classes, clips (the plan)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def chance_map(self) -> float:
        """Expected eval mAP of scores that ignore the clip (the mean eval prevalence)."""
        return float(self.meta["label_prior"]["chance_mAP_eval"])

    def plan(self, clip_id: str) -> dict:
        return next(c for c in self.meta["clips"] if c["clip_id"] == clip_id)


def build_synthetic_store(root: Path, clips: int = SYNTHETIC_CLIPS, seed: int = 0,
                          workers: int = 2) -> SyntheticStore:
    """Make the set under ``root/set`` and build ``root/store`` from it (resumes both)."""
    data, store = root / "set", root / "store"
    make_synthetic(data, clips, seed, progress=False)
    rc = main(["build", "--manifest", str(data / "manifest.csv"), "--labels",
               str(data / "labels.csv"), "--name", "synthetic", "--out", str(store),
               "--engine", "local", "--workers", str(workers), "--shard-size",
               str(SHARD_SIZE), "--no-progress"])
    assert rc == 0, f"pipeline build of the synthetic set failed (rc {rc})"
    assert main(["stats", str(store), "--engine", "local", "--workers", "1"]) == 0
    meta = json.loads((data / "synthetic.json").read_text())
    assert meta["classes"] == list(CLASSES)
    return SyntheticStore(data, str(store), meta)


def _complete(root: Path, clips: int) -> bool:
    try:
        st = open_store(str(root / "store"))
    except (StoreError, OSError, ValueError):
        return False
    return st.filter(status="ok").num_rows == clips and "fbank_mean" in st.spec.stats


_BUILT: dict[tuple[int, int], SyntheticStore] = {}


def _get(tmp_path_factory: pytest.TempPathFactory, clips: int, seed: int) -> SyntheticStore:
    key = (clips, seed)
    if key not in _BUILT:
        cache = os.environ.get("MAVIL_SYNTHETIC_CACHE")
        if cache:
            root = Path(cache) / f"v{FORMAT_VERSION}_{clips}clips_seed{seed}"
            if _complete(root, clips):
                meta = json.loads((root / "set" / "synthetic.json").read_text())
                _BUILT[key] = SyntheticStore(root / "set", str(root / "store"), meta)
                return _BUILT[key]
        else:
            root = tmp_path_factory.mktemp(f"synthetic_{clips}_{seed}")
        _BUILT[key] = build_synthetic_store(root, clips, seed)
    return _BUILT[key]


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory: pytest.TempPathFactory) -> SyntheticStore:
    return _get(tmp_path_factory, SYNTHETIC_CLIPS, 0)


@pytest.fixture(scope="session")
def synthetic_store_factory(tmp_path_factory: pytest.TempPathFactory
                            ) -> Callable[..., SyntheticStore]:
    def factory(clips: int = SYNTHETIC_CLIPS, seed: int = 0) -> SyntheticStore:
        return _get(tmp_path_factory, clips, seed)
    return factory
