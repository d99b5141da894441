"""Real media through the real path (ffmpeg decode -> fbank/JPEG -> store), the shared
clips' shapes and flags, and a corpus of bad inputs that must each end with a status."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from pipeline.decode import decode_clip
from pipeline.ffmpeg_bin import ffmpeg_exe
from pipeline.manifest import ClipSpec
from pipeline.shard_task import ShardJob, process_shard
from store import StoreSpec, create_store, open_store

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "pipeline" / "sample_media"


def _ff(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _clip(cid: str, path: Path | str, start: float = 0.0, end: float = 10.0) -> ClipSpec:
    return ClipSpec(cid, cid, start, end, str(path), [0], "train")


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory, media_dir: Path):
    root = tmp_path_factory.mktemp("media") / "store"
    create_store(str(root), StoreSpec(shard_size=16), None)
    clips = [_clip("bunny", media_dir / "bigbuckbunny.mp4"),
             _clip("earth", media_dir / "earth.mp4", 12.0, 22.0),
             _clip("city", media_dir / "cityCC0.mpg"),
             _clip("speech", media_dir / "speech_two_speakers.wav", 5.0, 15.0),
             _clip("house", media_dir / "house_lo.ogg")]
    summary = process_shard(ShardJob(str(root), 0, clips))
    return open_store(str(root)), summary


def _row(store, cid: str) -> dict:
    return next(r for r in store.index().to_pylist() if r["clip_id"] == cid)


@pytest.mark.slow
def test_shared_media_shapes_and_flags(shared_store) -> None:
    store, summary = shared_store
    assert summary["statuses"] == {"ok": 5}
    expect = {  # clip: (has_audio, has_video, frames, (w, h), duration ~)
        "bunny": (True, True, 11, (360, 202), 5.31),
        "earth": (True, True, 20, (360, 202), 10.0),
        "city": (False, True, 15, (360, 202), 7.5),
        "speech": (True, False, 0, (0, 0), 10.0),
        "house": (True, False, 0, (0, 0), 7.1),
    }
    for cid, (has_a, has_v, n, (w, h), dur) in expect.items():
        r, clip = _row(store, cid), store.get(cid)
        assert (r["has_audio"], r["has_video"], r["video_frames"]) == (has_a, has_v, n), cid
        assert (clip.width, clip.height) == (w, h), cid
        assert abs(r["duration"] - dur) < 0.1, cid
        assert tuple(clip.fbank.shape) == (1024, 128) and clip.fbank.dtype == torch.float16
        frames = clip.decode_frames()
        assert tuple(frames.shape) == (n, 3, h, w)
        if has_a:
            assert r["audio_frames"] == 1 + (round(dur * 16000) - 400) // 160
            assert torch.isfinite(clip.fbank.float()).all()
        else:
            assert r["audio_frames"] == 0 and not clip.fbank.any()


def test_51_48k_audio_is_downmixed_and_resampled(media_dir: Path) -> None:
    path = str(media_dir / "bigbuckbunny.mp4")
    raw = subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", path, "-map",
                          "0:a:0", "-f", "f32le", "-"], capture_output=True, check=True).stdout
    six = np.frombuffer(raw, "<f4").reshape(-1, 6)  # 5.1 at 48 kHz
    assert len(six) == 254976
    plain = six[:, [0, 1, 2, 4, 5]].mean(axis=1)     # independent: mean without LFE
    ref = torchaudio.functional.resample(torch.from_numpy(plain.copy()), 48000, 16000).numpy()
    ours = decode_clip(path, 0.0, 10.0).audio
    assert ours.ndim == 1 and len(ours) == len(six) // 3
    assert np.corrcoef(ours, ref[: len(ours)])[0, 1] > 0.95


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {}
    files["empty"] = d / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["text"] = d / "text.mp4"
    files["text"].write_text("this is not a video\n" * 20)
    bunny = (media_dir / "bigbuckbunny.mp4").read_bytes()  # moov atom at the end
    files["truncated"] = d / "truncated.mp4"
    files["truncated"].write_bytes(bunny[: len(bunny) // 2])
    earth = (media_dir / "earth.mp4").read_bytes()         # moov first, then mdat
    files["header_only"] = d / "header_only.mp4"
    files["header_only"].write_bytes(earth[: earth.index(b"mdat") - 4])
    files["short"] = d / "short.mp4"
    _ff("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i",
        "sine=frequency=440:sample_rate=44100", "-t", "0.5", "-c:v", "libx264", "-preset",
        "ultrafast", "-c:a", "aac", "-shortest", str(files["short"]))
    files["uhd"] = d / "uhd.mp4"
    _ff("-f", "lavfi", "-i", "testsrc=size=3840x2160:rate=25", "-t", "1", "-c:v", "libx264",
        "-preset", "ultrafast", str(files["uhd"]))
    files["audio_only"] = d / "audio_only.m4a"
    _ff("-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100:duration=2",
        str(files["audio_only"]))
    files["plain"] = d / "plain.mp4"
    _ff("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-t", "1", "-c:v", "libx264",
        "-preset", "ultrafast", str(files["plain"]))
    files["rotated"] = d / "rotated.mp4"
    _ff("-display_rotation", "90", "-i", str(files["plain"]), "-c", "copy",
        str(files["rotated"]))
    files["missing"] = d / "missing.mp4"
    return files


def test_bad_inputs_end_with_specific_statuses(bad_corpus: dict[str, Path],
                                               tmp_path: Path) -> None:
    root = tmp_path / "store"
    create_store(str(root), StoreSpec(), None)
    clips = [_clip(name, path) for name, path in bad_corpus.items()]
    summary = process_shard(ShardJob(str(root), 0, clips))
    assert summary["clips"] == len(clips)
    store = open_store(str(root))
    got = {r["clip_id"]: r for r in store.index().to_pylist()}
    expect = {"empty": "bad_media", "text": "bad_media", "truncated": "bad_media",
              "header_only": "decode_error", "missing": "not_found", "short": "ok",
              "uhd": "ok", "audio_only": "ok", "plain": "ok", "rotated": "ok"}
    assert {k: got[k]["status"] for k in expect} == expect
    for k, status in expect.items():
        assert (got[k]["error"] != "") == (status != "ok"), k
    reasons = {"empty": "empty file", "text": "Invalid data", "truncated": "Invalid data",
               "header_only": "received no packets", "missing": "does not exist"}
    for k, words in reasons.items():  # each failure names its cause
        assert words in got[k]["error"], (k, got[k]["error"])
    short = got["short"]
    assert abs(short["duration"] - 0.5) < 0.06 and short["has_audio"] and short["has_video"]
    assert short["video_frames"] == 1
    assert short["audio_frames"] == 1 + (round(short["duration"] * 16000) - 400) // 160
    assert (got["uhd"]["width"], got["uhd"]["height"], got["uhd"]["video_frames"]) == \
        (360, 202, 2)
    assert got["audio_only"]["has_audio"] and not got["audio_only"]["has_video"]
    assert (got["rotated"]["width"], got["rotated"]["height"]) == (270, 360)


def test_rotation_metadata_is_honoured(bad_corpus: dict[str, Path]) -> None:
    plain = decode_clip(str(bad_corpus["plain"]), 0, 10).frames[0].astype(np.float32)
    rotated = decode_clip(str(bad_corpus["rotated"]), 0, 10).frames[0].astype(np.float32)
    assert plain.shape == (270, 360, 3) and rotated.shape == (360, 270, 3)
    # display_rotation 90 = a quarter turn counter-clockwise, as np.rot90(k=1)
    assert np.abs(np.rot90(plain, 1) - rotated).mean() < 1.0
    assert np.abs(np.rot90(plain, -1) - rotated).mean() > 20.0


def test_jpeg_encoders_and_mjpeg_path_agree_in_size(media_dir: Path) -> None:
    from torchvision.io import decode_jpeg

    from pipeline.decode import DecodeOptions
    from pipeline.features import encode_jpegs

    path = str(media_dir / "earth.mp4")
    rgb = decode_clip(path, 0, 3).frames
    mj = decode_clip(path, 0, 3, DecodeOptions(video_output="mjpeg")).jpegs
    assert len(rgb) == len(mj) == 6
    for enc in ("pil", "torchvision"):
        jpegs = encode_jpegs(rgb, 90, enc)
        back = decode_jpeg(torch.frombuffer(bytearray(jpegs[0]), dtype=torch.uint8))
        assert tuple(back.shape) == (3, 202, 360)
        assert (back.permute(1, 2, 0).float() - torch.from_numpy(rgb[0]).float()).abs() \
            .mean() < 3.0
    back = decode_jpeg(torch.frombuffer(bytearray(mj[0]), dtype=torch.uint8))
    assert (back.permute(1, 2, 0).float() - torch.from_numpy(rgb[0]).float()).abs().mean() < 4.0


def test_ffmpeg_binary_choice(media_dir: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    import imageio_ffmpeg

    from pipeline.decode import DecodeOptions
    from pipeline.ffmpeg_bin import ENV_VAR

    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    mine = tmp_path / "my-ffmpeg"
    mine.symlink_to(bundled)
    monkeypatch.delenv(ENV_VAR, raising=False)
    ffmpeg_exe.cache_clear()
    try:
        assert ffmpeg_exe() == bundled                      # default: imageio-ffmpeg's
        assert ffmpeg_exe(str(mine)) == str(mine)           # --ffmpeg
        monkeypatch.setenv(ENV_VAR, str(mine))
        ffmpeg_exe.cache_clear()
        assert ffmpeg_exe() == str(mine)                    # $MAVIL_FFMPEG
        with pytest.raises(FileNotFoundError, match="nope"):
            ffmpeg_exe(str(tmp_path / "nope"))
        decoded = decode_clip(str(media_dir / "earth.mp4"), 0, 1,
                              DecodeOptions(ffmpeg=str(mine)))
        assert decoded.n_frames == 2 and len(decoded.audio) == 16000
    finally:
        ffmpeg_exe.cache_clear()


def test_sample_media_is_small_and_documented() -> None:
    files = [p for p in SAMPLES.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5.2e6
    text = (SAMPLES / "PROVENANCE.md").read_text()
    for p in files:
        if p.suffix not in (".md", ".csv"):
            assert p.name in text


def test_hdf5_store_holds_the_same_features_as_zarr(tmp_path: Path) -> None:
    clips = [_clip("bunny", SAMPLES / "bigbuckbunny.mp4", 0.0, 3.0),
             _clip("house", SAMPLES / "house_lo.ogg", 0.0, 3.0)]
    sums = {}
    for backend in ("zarr", "hdf5"):
        root = tmp_path / backend
        create_store(str(root), StoreSpec(backend=backend), None)
        process_shard(ShardJob(str(root), 0, clips))
        index = open_store(str(root)).index()
        sums[backend] = dict(zip(index["clip_id"].to_pylist(), index["checksum"].to_pylist(),
                                 strict=True))
    assert sums["zarr"] == sums["hdf5"] and all(sums["zarr"].values())
