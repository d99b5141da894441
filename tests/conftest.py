"""Shared fixtures: where the real AudioSet metadata and media live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from synthetic_fixtures import synthetic_store, synthetic_store_factory  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    env = os.environ.get("MAVIL_SHARED")
    if env:
        return Path(env)
    return REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _find_shared()
    if not (path / "data").is_dir():
        pytest.fail(f"shared material not found at {path}; set MAVIL_SHARED to its location")
    return path


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "media"


@pytest.fixture(scope="session")
def audioset_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "audioset"
