"""`pipeline build-speechcommands` on small v0.01 / v0.02 trees in the published layout (real
speech cut with ffmpeg to 1-s wavs): list-file splits, the 35-word and 12-class tasks, the
silence windows, 128 stored frames (a 1-s clip's fbank is 1024/128 = 8x smaller than at
the 10-s default), and bad layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from short_clip_fixtures import cut, make_speechcommands

from pipeline.cli import main
from pipeline.manifest import ManifestBuilder
from pipeline.speechcommands import (
    COMMANDS,
    SILENCE,
    UNKNOWN,
    WORDS_V2,
    read_speechcommands,
    task_classes,
)
from store import open_store

BUILD = ["--engine", "local", "--workers", "2", "--no-progress"]


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    return make_speechcommands(tmp_path_factory.mktemp("spc2"), shared_dir, "v0.02")


@pytest.fixture(scope="module")
def v1_root(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    return make_speechcommands(tmp_path_factory.mktemp("spc1"), shared_dir, "v0.01")


def _lists(root: Path) -> dict[str, str]:
    out = {}
    for split, name in (("valid", "validation_list.txt"), ("test", "testing_list.txt")):
        out.update({line: split for line in (root / name).read_text().split()})
    return out


def test_task_classes() -> None:
    assert len(task_classes("35")) == 35 == len(set(WORDS_V2))
    assert task_classes("12") == [*COMMANDS, UNKNOWN, SILENCE]


def test_35_word_task(v2_root: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "s")
    assert main(["build-speechcommands", "--root", str(v2_root), "--out", out, *BUILD]) == 0
    store = open_store(out)
    assert store.spec.target_frames == 128 and store.spec.clip_seconds == 1.0
    assert store.vocabulary["display_name"].to_pylist() == sorted(WORDS_V2)
    rows = store.index().to_pylist()
    assert len(rows) == 12 and {r["status"] for r in rows} == {"ok"}  # no background clips
    listed = _lists(v2_root)
    words = sorted(WORDS_V2)
    for r in rows:
        rel = Path(r["uri"]).parent.name + "/" + Path(r["uri"]).name
        assert r["split"] == listed.get(rel, "train")
        assert r["labels"] == [words.index(rel.split("/")[0])]
        assert r["audio_frames"] == 98  # 1 s at 16 kHz: (16000 - 400) // 160 + 1
    assert {r["split"] for r in rows} == {"train", "valid", "test"}
    clip = store.get(0)
    assert tuple(clip.fbank.shape) == (128, 128)


def test_12_class_task_with_silence(v1_root: Path, tmp_path: Path) -> None:
    b = read_speechcommands(v1_root, ManifestBuilder(), "12")
    classes = task_classes("12")
    words = [s for s in b.specs if not s.clip_id.startswith(SILENCE)]
    assert {classes[s.labels[0]] for s in words} == {"yes", "no", UNKNOWN}  # house: unknown
    silence = [s for s in b.specs if s.clip_id.startswith(SILENCE)]
    # running_tap 12 s -> 12 windows, dude_miaowing 4.5 s -> 4; window i: i % 10 == 0 test,
    # == 1 valid, else train
    assert len(silence) == 16 and all(s.end - s.start == 1.0 for s in silence)
    assert sorted(s.split for s in silence).count("test") == 3  # windows 0, 10 and 0
    assert sorted(s.split for s in silence).count("valid") == 3  # windows 1, 11 and 1
    assert not b.rejects
    out = str(tmp_path / "s")
    assert main(["build-speechcommands", "--root", str(v1_root), "--task", "12", "--out", out,
                 *BUILD]) == 0
    store = open_store(out)
    rows = store.index().to_pylist()
    assert len(rows) == 9 + 16 and {r["status"] for r in rows} == {"ok"}
    sil = [r for r in rows if r["clip_id"].startswith(SILENCE)]
    assert all(r["audio_frames"] == 98 for r in sil)


def test_12_class_superb_test_set(v1_root: Path, tmp_path: Path) -> None:
    """--test-root: the test split is the test-set release's folders; the test list's files
    leave train and valid."""
    test_root = tmp_path / "speech_commands_test_set_v0.01"
    for cls in ("yes", UNKNOWN, SILENCE):
        cut(v1_root / "yes" / sorted((v1_root / "yes").iterdir())[0].name,
            test_root / cls / "abcd1234_nohash_0.wav", 0.0, 1.0, 16000)
    b = read_speechcommands(v1_root, ManifestBuilder(), "12", test_root)
    test = [s for s in b.specs if s.split == "test"]
    assert sorted(task_classes("12")[s.labels[0]] for s in test) == sorted(
        ["yes", UNKNOWN, SILENCE])
    listed = {k for k, v in _lists(v1_root).items() if v == "test"}
    assert not any(s.uri.endswith(tuple(listed)) for s in b.specs)


def test_35_needs_v002(v1_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["build-speechcommands", "--root", str(v1_root), "--out", str(tmp_path / "s"),
               *BUILD])
    assert rc == 2 and "needs v0.02" in capsys.readouterr().err


def test_bad_layouts(v2_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "speech_commands_v0.02"
    shutil.copytree(v2_root, root)
    (root / "yess").mkdir()
    shutil.copy(next((root / "yes").iterdir()), root / "yess" / "00000000_nohash_0.wav")
    with open(root / "testing_list.txt", "a") as f:
        f.write("no/ffffffff_nohash_9.wav\n../etc/passwd\n")
    b = read_speechcommands(root, ManifestBuilder(), "35")
    got = {(r.file, r.reason) for r in b.rejects}
    assert got == {("testing_list.txt", "bad_uri"), ("yess/", "unknown_label")}
    missing = [r for r in b.rejects if r.raw_id == "no/ffffffff_nohash_9.wav"]
    assert missing and missing[0].line == 5 and "does not exist" in missing[0].detail
    assert len(b.specs) == 12
    (root / "validation_list.txt").unlink()
    rc = main(["build-speechcommands", "--root", str(root), "--out", str(tmp_path / "s"),
               *BUILD])
    err = capsys.readouterr().err
    assert rc == 2 and "validation_list.txt not found" in err


def test_one_second_clip_stored_8x_smaller(v2_root: Path, tmp_path: Path) -> None:
    """The same 1-s clip at the 10-s default (1024 frames) and at 128 frames: the stored
    fbank falls by exactly 1024 / 128 = 8 (raw float16 [T, 128] chunk + a 20-byte shard
    index), the loader gives [1, 128, 128] inputs, and the views follow the store."""
    from store.datasets import ClipDataset
    from store.views.presets import make_view

    wav = sorted((v2_root / "yes").iterdir())[0]
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,uri,start,end,labels,split\none,{wav},0,1,yes,train\n")
    sizes, shapes = {}, {}
    for frames in (None, 128):
        out = tmp_path / f"s{frames}"
        extra = ["--target-frames", str(frames)] if frames else []
        assert main(["build", "--manifest", str(manifest), "--out", str(out), *extra,
                     *BUILD]) == 0
        chunk = next(out.glob("shards/*.zarr/fbank/c/0/0/0"))
        sizes[frames] = chunk.stat().st_size - 20  # n x 16 index bytes + 4-byte CRC32C
        ds = ClipDataset(str(out), make_view("audio_eval", labels=False))
        shapes[frames] = tuple(ds[0]["audio"].shape)
    assert sizes == {None: 1024 * 128 * 2, 128: 128 * 128 * 2}
    assert shapes == {None: (1, 1024, 128), 128: (1, 128, 128)}


def test_trainer_unknown_half_sampler_follows_the_footnote(v1_root: Path, tmp_path: Path) -> None:
    """Table 10 footnote *: each class repeated to 50 % of `_unknown_`'s size. The epoch's
    draws per class, counted by hand from the train split, against the trainer's sampler."""
    from collections import Counter

    from omegaconf import OmegaConf

    from train.config import Config
    from train.data import build_loader

    out = str(tmp_path / "s")
    assert main(["build-speechcommands", "--root", str(v1_root), "--task", "12", "--out", out,
                 *BUILD]) == 0
    store = open_store(out)
    cfg = OmegaConf.structured(Config)
    cfg.model.inputs = ["audio"]
    cfg.data.view, cfg.data.sampler, cfg.data.multi_label = "audio_train", "unknown_half", False
    cfg.data.audio_frames = 128
    classes = task_classes("12")
    loader = build_loader(cfg, store, 0, 1, len(classes))
    labels = [ls[0] for ls in loader.dataset.labels]
    n = Counter(labels)
    unknown = classes.index(UNKNOWN)
    want = {c: max(k, n[unknown] * 0.5) if c != unknown else k for c, k in n.items()}
    assert len(loader.sampler) == round(sum(want.values()))
    draws: Counter = Counter()
    for epoch in range(40):
        loader.sampler.set_epoch(epoch)
        draws.update(labels[i] for i in loader.sampler)
    total = sum(draws.values())
    for c in n:  # each class's share of an epoch, within sampling error
        assert abs(draws[c] / total - want[c] / sum(want.values())) < 0.08
