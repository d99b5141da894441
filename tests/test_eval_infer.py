"""`evaluate run`: the 10-clip protocol, pass counts, predictions, metrics and bad input.

The store is the loader tests' real 12-clip store (tests/loader_fixtures.py, all split
"train", 5 classes); checkpoints are tiny models saved per the train/trained.py contract.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from eval_fixtures import randomize_head, save_checkpoint
from loader_fixtures import zarr_store  # noqa: F401
from test_eval_metrics import hand_ap

import store.jpeg as jpeg
from eval.cli import main
from eval.forward import score_batch
from eval.infer import read_predictions
from eval.metrics import multi_hot
from eval.views import cavmae_frame_indices, inference_setup
from store import open_store
from store.jpeg import decode_cpu
from store.views import AudioNorm, make_view
from store.views.crop import center_square_box
from store.views.render import render_frames
from train.models import build_model
from train.models.patch_embed import AudioPatchEmbed, VideoPatchEmbed

SIZE = 64  # the tiny models see 64 x 64 frames (4 x 4 patches): seconds per run on a CPU
NORM = {"norm": AudioNorm("test", -4.0, 4.0, 1.0)}


def tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    kw.setdefault("num_classes", 5)
    m = build_model(name, "tiny", img_size=SIZE, **kw)
    randomize_head(m)
    return m.eval()


@pytest.fixture(scope="module")
def av_ckpt(zarr_store, tmp_path_factory) -> Path:  # noqa: F811
    path = tmp_path_factory.mktemp("ck") / "av.pt"
    return save_checkpoint(path, "mavil_av_ft", "finetune", zarr_store,
                           model=tiny("mavil_av_ft"), num_classes=5, img_size=SIZE)


def run(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_ten_windows_equal_mavil_eval10(zarr_store) -> None:  # noqa: F811
    st = open_store(zarr_store)
    setup = inference_setup("mavil_av_ft", tiny("mavil_av_ft"), 10, NORM, size=SIZE)
    assert setup.view_name == "mavil_eval10" and setup.num_views == 10
    ref = make_view("mavil_eval10", size=SIZE, labels=False, **NORM)
    view = setup.view.for_store(st.vocabulary.num_rows, st.spec.stats)
    g = torch.Generator()
    for clip in [st.get(i) for i in range(len(st)) if st.get(i).has_video][:4]:
        got = view(clip, g)
        assert torch.equal(got["video"], ref(clip, g)["video"])
        assert torch.equal(got["audio"], ref(clip, g)["audio"])  # one 10-s audio per clip
        n = len(clip.frames)
        starts = np.round(np.linspace(0, max(n - 8, 0), 10)).astype(int)
        frames = torch.stack(decode_cpu(clip.frames))
        box = center_square_box(clip.height, clip.width)
        for k, s in enumerate(starts):
            idx = [(s + j) % n for j in range(8)]
            want = render_frames(frames[idx], box, SIZE)
            torch.testing.assert_close(got["video"][k], want)


def test_cavmae_frames_follow_the_official_extraction() -> None:
    assert cavmae_frame_indices(20) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert cavmae_frame_indices(15) == [0, 1, 3, 4, 6, 7, 9, 10, 12, 13]  # int(k * 1.5)
    assert cavmae_frame_indices(20)[5] == 20 // 2  # the 1-clip frame (FrameView eval)


@pytest.mark.parametrize("name", ["mavil_av_ft", "cav_mae_ft", "av_mae_ft"])
def test_audio_once_equals_ten_full_forwards(name: str, zarr_store) -> None:  # noqa: F811
    model = tiny(name)
    setup = inference_setup(name, model, 10, NORM, size=SIZE)
    st = open_store(zarr_store)
    clips = [c for c in (st.get(i) for i in range(len(st))) if c.has_audio and c.has_video][:2]
    view = setup.view.for_store(st.vocabulary.num_rows, st.spec.stats)
    samples = [view(c, torch.Generator()) for c in clips]
    audio = torch.stack([s["audio"] for s in samples])
    video = torch.stack([s["video"] for s in samples])
    got = score_batch(model, setup.family, audio, video, single_label=False)
    with torch.no_grad():
        per_view = [model(audio, video[:, k]).sigmoid() for k in range(video.shape[1])]
    torch.testing.assert_close(got, torch.stack(per_view).mean(0), rtol=1e-5, atol=1e-6)


def test_one_audio_pass_per_clip_and_one_decode_per_stored_frame(
        av_ckpt, zarr_store, tmp_path, capsys, monkeypatch) -> None:  # noqa: F811
    rows = {"audio": 0, "video": 0}
    decoded = []
    for cls, key in ((AudioPatchEmbed, "audio"), (VideoPatchEmbed, "video")):
        orig = cls.forward

        def spy(self, x, _orig=orig, _key=key):
            rows[_key] += x.shape[0]
            return _orig(self, x)
        monkeypatch.setattr(cls, "forward", spy)
    orig_decode = jpeg.decode_cpu  # what every CPU video view decodes with
    monkeypatch.setattr(jpeg, "decode_cpu",
                        lambda jpegs: decoded.append(len(jpegs)) or orig_decode(jpegs))
    rc, out, err = run(["run", "--ckpt", str(av_ckpt), "--store", zarr_store, "--out",
                        str(tmp_path), "--split", "train", "--num-workers", "0", "--quiet",
                        "--no-report"], capsys)
    assert rc == 0, err
    st = open_store(zarr_store)
    ok = [st.get(i) for i in range(len(st))]
    assert rows["audio"] == len(ok) == 12  # one audio-encoder pass per clip
    assert rows["video"] == 10 * len(ok)  # ten windows (zeros for clips without video)
    with_video = [c for c in ok if c.has_video]
    assert len(decoded) == len(with_video)  # one decode call per clip ...
    assert sum(decoded) == sum(len(c.frames) for c in with_video)  # ... each frame once


def test_predictions_and_metrics_of_a_real_tiny_model(
        av_ckpt, zarr_store, tmp_path, capsys) -> None:  # noqa: F811
    rc, out, err = run(["run", "--ckpt", str(av_ckpt), "--store", zarr_store, "--out",
                        str(tmp_path), "--split", "train", "--num-workers", "0", "--quiet",
                        "--part-size", "5", "--no-report"], capsys)
    assert rc == 0, err
    assert "12 clips scored" in out
    table = pq.read_table(tmp_path / "predictions.parquet")
    assert table.schema.field("clip_id").type == pa.string()
    assert table.schema.field("labels").type == pa.list_(pa.int32())
    assert table.schema.field("scores").type == pa.list_(pa.float32())
    assert set(table["num_clips"].to_pylist()) == {10}
    ids, labels, scores, _ = read_predictions(tmp_path)
    st = open_store(zarr_store)
    want = st.filter(split="train")
    assert sorted(ids) == sorted(want["clip_id"].to_pylist())  # each clip exactly once
    assert dict(zip(ids, labels, strict=True)) == dict(
        zip(want["clip_id"].to_pylist(), want["labels"].to_pylist(), strict=True))
    m = json.loads((tmp_path / "metrics.json").read_text())
    t = multi_hot(labels, 5)
    ap = [hand_ap(scores[:, c].astype(np.float64), t[:, c]) for c in range(5)]
    assert m["mAP"] == pytest.approx(np.mean(ap), abs=1e-9)
    assert m["clips_scored"] == 12 and m["clips_skipped"] == 0
    assert m["clips_zero_filled"] == m["clips_without_audio"] + m["clips_without_video"] > 0
    assert m["protocol"]["clips"] == 10 and m["checkpoint"].endswith("av.pt")
    assert 0.0 <= scores.min() and scores.max() <= 1.0 and scores.std() > 0.01  # sigmoid


def test_skip_policy_and_audio_only_single_pass(zarr_store, tmp_path, capsys) -> None:  # noqa: F811
    ck = save_checkpoint(tmp_path / "a.pt", "mavil_audio_ft", "finetune", zarr_store,
                         model=tiny("mavil_audio_ft"), num_classes=5, img_size=SIZE)
    rc, out, err = run(["run", "--ckpt", str(ck), "--store", zarr_store, "--out",
                        str(tmp_path / "o"), "--split", "train", "--num-workers", "0",
                        "--quiet", "--missing", "skip", "--no-report"], capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    st = open_store(zarr_store)
    no_audio = sum(not st.get(i).has_audio for i in range(len(st)))
    assert m["clips_skipped"] == no_audio > 0 and m["clips_scored"] == 12 - no_audio
    assert set(read_predictions(tmp_path / "o")[3].tolist()) == {1}  # audio: one pass


def test_bad_input_is_one_line(av_ckpt, zarr_store, tmp_path, capsys) -> None:  # noqa: F811
    pre = save_checkpoint(tmp_path / "pt.pt", "mavil", "stage1", zarr_store)
    rc, _, err = run(["run", "--ckpt", str(pre), "--store", zarr_store, "--out",
                      str(tmp_path / "a"), "--split", "train"], capsys)
    assert rc == 2 and "not a fine-tuned classifier" in err and len(err.splitlines()) == 1
    ck = torch.load(av_ckpt, weights_only=True)
    ck["config"]["data"]["vocabulary"] = ["/m/other"] + ck["config"]["data"]["vocabulary"][1:]
    torch.save(ck, tmp_path / "other.pt")
    rc, _, err = run(["run", "--ckpt", str(tmp_path / "other.pt"), "--store", zarr_store,
                      "--out", str(tmp_path / "b"), "--split", "train"], capsys)
    assert rc == 2 and "different vocabulary" in err and len(err.splitlines()) == 1
    rc, _, err = run(["run", "--ckpt", str(av_ckpt), "--store", zarr_store, "--out",
                      str(tmp_path / "c")], capsys)  # the sample store has no eval split
    assert rc == 2 and "split 'eval'" in err and "has no clips" in err
    assert len(err.splitlines()) == 1
    rc, _, err = run(["run", "--ckpt", str(tmp_path / "nope.pt"), "--store", zarr_store,
                      "--out", str(tmp_path / "d")], capsys)
    assert rc == 2 and "no such checkpoint" in err
