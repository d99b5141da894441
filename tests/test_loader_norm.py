"""Audio normalisation presets against the official code's constants and formulas, and the
dataset filling in what a view leaves to the store (label count, "store" stats)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from loader_fixtures import zarr_store  # noqa: F401

from store import open_store
from store.datasets import ClipDataset
from store.views import NORM_NAMES, VIEW_NAMES, AudioNorm, audio_norm, default_norm, make_view
from store.views.sample import SampleView

# The constants as the official files spell them (typed from the sources, not from our code):
# AudioMAE main_pretrain.py / main_finetune_as.py norm_stats, dataset.py: / (norm_std * 2);
# CAV-MAE egs/*/run_cavmae_*.sh dataset_mean/std, src/dataloader.py: / (self.norm_std);
# MAViL Table 10 "Dataset Mean / Std for Normalization" (AS, VGGSound, ESC, SPC).
OFFICIAL = {
    "audiomae": (-4.2677393, 4.5689974, 2),
    "cavmae": (-5.081, 4.4849, 1),
    "vggsound": (-5.189, 3.260, 2),
    "esc": (-6.627, 5.359, 2),
    "spc": (-6.702, 5.448, 2),
    "spc_audiomae": (-6.845978, 5.5654526, 2),
}


def _clip(fbank: torch.Tensor, frames: int, labels=(1, 3)):
    return type("C", (), {"clip_id": "x", "labels": list(labels), "fbank": fbank,
                          "audio_frames": frames, "has_audio": True, "has_video": False,
                          "frames": []})()


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_each_preset_is_the_official_formula(name: str) -> None:
    mean, std, scale = OFFICIAL[name]
    x = np.random.default_rng(0).normal(-5, 3, size=(1024, 128)).astype(np.float32)
    ref = (x.astype(np.float64) - mean) / (std * scale)          # NumPy, in float64
    out = audio_norm(name)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_padding_values_by_hand() -> None:
    """A zero-padded frame: AudioMAE 4.2677393 / 9.1379948 = 0.46704, CAV-MAE 5.081 / 4.4849
    = 1.13291 (the old default, std alone with MAViL's constants, gave 0.934)."""
    zero = torch.zeros(1)
    assert audio_norm("audiomae")(zero).item() == pytest.approx(0.467036, abs=1e-5)
    assert audio_norm("cavmae")(zero).item() == pytest.approx(1.132912, abs=1e-5)


def test_view_families_default_to_their_papers_preset() -> None:
    for name in VIEW_NAMES:
        view = make_view(name)
        if name.startswith("video"):
            assert view.audio is None
            continue
        want = "cavmae" if name.startswith("cavmae") else "audiomae"
        assert default_norm(name) == want and view.audio.norm.name == want
    pad = _clip(torch.zeros(10, 128), 10)
    out = make_view("mavil_pretrain", labels=False)(pad, torch.Generator().manual_seed(0))
    assert torch.allclose(out["audio"], torch.full_like(out["audio"], 0.467036), atol=1e-5)
    out = make_view("cavmae_train", labels=False)(pad, torch.Generator().manual_seed(0))
    assert torch.allclose(out["audio"], torch.full_like(out["audio"], 1.132912), atol=1e-5)


def test_preset_shows_in_the_repr_and_round_trips_through_a_config() -> None:
    view = make_view("mavil_finetune", norm="spc")
    assert "AudioNorm('spc': (x + 6.702) / (2 * 5.448))" in repr(view)
    assert "(x + 5.081) / 4.4849" in repr(make_view("cavmae_eval"))
    for name in NORM_NAMES:
        saved = json.loads(json.dumps(audio_norm(name).to_dict()))  # what a run config holds
        assert audio_norm(saved) == audio_norm(name)
        assert set(saved) == {"name", "mean", "std", "scale"}
    custom = audio_norm({"mean": -3.0, "std": 2.0})
    assert custom == AudioNorm("custom", -3.0, 2.0, 1.0)
    assert make_view("audio_eval", norm=custom).audio.norm is custom
    with pytest.raises(ValueError, match="unknown audio normalisation 'as'"):
        make_view("mavil_eval", norm="as")
    with pytest.raises(ValueError, match="lacks"):
        audio_norm({"mean": 1.0})


def test_store_preset_needs_the_store() -> None:
    view = make_view("mavil_eval", norm="store", labels=False)
    with pytest.raises(ValueError, match="no mean/std yet"):
        view(_clip(torch.zeros(10, 128), 10), torch.Generator())
    with pytest.raises(ValueError, match="pipeline stats"):
        view.for_store(5, {})
    done = view.for_store(5, {"fbank_mean": -3.0, "fbank_std": 4.0})
    assert done.audio.norm == AudioNorm("store", -3.0, 4.0, 2.0)
    assert view.audio.norm.mean is None                          # the original is unchanged


def test_datasets_take_num_classes_from_the_vocabulary(zarr_store: str) -> None:  # noqa: F811
    st = open_store(zarr_store)
    vocab = st.vocabulary.num_rows
    ds = ClipDataset(st, make_view("mavil_pretrain"), deterministic=True)
    assert ds.view.labels.num_classes == vocab
    sample = ds[0]
    assert sample["label"].shape == (vocab,)
    assert sample["label"].sum() == len(set(st.get(int(sample["index"])).labels))
    told = ClipDataset(st, make_view("mavil_pretrain", num_classes=vocab + 3))
    assert told.view.labels.num_classes == vocab + 3             # told otherwise: kept
    bare = ClipDataset(st, make_view("mavil_pretrain", labels=False), deterministic=True)
    assert "label" not in bare[0]
    with pytest.raises(ValueError, match="no num_classes yet"):
        make_view("mavil_eval")(st.get(0), torch.Generator())
    assert isinstance(ds.view, SampleView)
