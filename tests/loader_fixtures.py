"""Small real stores for the loader tests, built once per session from the shared media.

12 clips (time-shifted 10-s windows of the five shared media files: audio+video, video
without audio, audio without video, clips shorter than 10 s) in 4 shards, for both backends.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from store.sample_store import SAMPLE_PLAN, build_sample_store, decode_media

_CACHE: dict[str, object] = {}


def _decoded(media_dir: Path) -> dict:
    if "media" not in _CACHE:
        _CACHE["media"] = {name: decode_media(media_dir / name) for name, _ in SAMPLE_PLAN}
    return _CACHE["media"]  # type: ignore[return-value]


def sample_store(backend: str, media_dir: Path, factory: pytest.TempPathFactory) -> str:
    key = f"store-{backend}"
    if key not in _CACHE:
        path = factory.mktemp(f"loader-{backend}") / "store"
        _CACHE[key] = build_sample_store(
            path, media_dir, backend, SAMPLE_PLAN, shards=4, decoded=_decoded(media_dir)
        )
    return _CACHE[key]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def zarr_store(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return sample_store("zarr", media_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def hdf5_store(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    return sample_store("hdf5", media_dir, tmp_path_factory)


@pytest.fixture(scope="session", params=["zarr", "hdf5"])
def any_store(
    request: pytest.FixtureRequest, media_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    return sample_store(request.param, media_dir, tmp_path_factory)
