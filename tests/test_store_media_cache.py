"""Decoded media saved and read back ($MAVIL_MEDIA_CACHE): what a machine without ffmpeg
(the GPU host of .ci/gpu-checks) builds its stores from, and the stores built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from store.reader import open_store
from store.sample_store import (
    SAMPLE_PLAN,
    build_sample_store,
    cached_name,
    decode_media,
    load_media,
    main,
    save_media,
)

NAMES = sorted({name for name, _ in SAMPLE_PLAN})


@pytest.fixture(scope="module")
def cache(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("media-cache")
    assert main(["cache", str(out), "--media", str(media_dir)]) == 0
    return out


def _same(a, b) -> None:
    assert (a.height, a.width, len(a.frames)) == (b.height, b.width, len(b.frames))
    assert a.frames == b.frames
    if a.waveform is None:
        assert b.waveform is None
    else:
        np.testing.assert_array_equal(a.waveform, b.waveform)


@pytest.mark.parametrize("name", NAMES)
def test_saved_media_read_back_unchanged(media_dir: Path, tmp_path: Path, name: str) -> None:
    media = decode_media(media_dir / name)
    save_media(media, tmp_path / "m.npz")
    _same(media, load_media(tmp_path / "m.npz"))


def test_cache_stands_in_for_ffmpeg(media_dir: Path, cache: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ref = {name: decode_media(media_dir / name, 85) for name in NAMES}
    assert any(m.waveform is None for m in ref.values())  # a video without sound among them
    assert any(not m.frames for m in ref.values())  # and audio without video
    monkeypatch.setenv("MAVIL_FFMPEG", str(cache / "no-ffmpeg-here"))
    with pytest.raises(FileNotFoundError):
        decode_media(media_dir / NAMES[0])  # no cache named: ffmpeg is needed, and missing
    monkeypatch.setenv("MAVIL_MEDIA_CACHE", str(cache))
    for name in NAMES:
        _same(ref[name], decode_media(media_dir / name, 85))
    assert (cache / cached_name(media_dir / NAMES[0], 90)).is_file()  # the fixtures' quality


def test_store_from_the_cache_is_the_store_from_ffmpeg(
    media_dir: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = SAMPLE_PLAN[:4]
    a = open_store(build_sample_store(tmp_path / "ffmpeg", media_dir, "zarr", plan, shards=2))
    monkeypatch.setenv("MAVIL_FFMPEG", str(cache / "no-ffmpeg-here"))
    monkeypatch.setenv("MAVIL_MEDIA_CACHE", str(cache))
    b = open_store(build_sample_store(tmp_path / "cache", media_dir, "zarr", plan, shards=2))
    assert len(a) == len(b) == len(plan)
    for i in range(len(plan)):
        x, y = a.get(i), b.get(i)
        assert (x.clip_id, x.has_audio, x.has_video) == (y.clip_id, y.has_audio, y.has_video)
        assert x.frames == y.frames
        np.testing.assert_array_equal(np.asarray(x.fbank), np.asarray(y.fbank))


def test_build_gives_the_clips_asked_for(media_dir: Path, cache: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAVIL_MEDIA_CACHE", str(cache))
    assert main(["build", str(tmp_path / "s"), "--clips", "10", "--media", str(media_dir)]) == 0
    st = open_store(str(tmp_path / "s"))
    assert len(st) == 10
    assert all(st.get(i).has_audio and st.get(i).has_video for i in range(len(st)))
