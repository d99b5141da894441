"""Views: shapes, dtypes, ranges, and fidelity against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio
import torchvision.transforms as T
from loader_fixtures import any_store, hdf5_store, zarr_store  # noqa: F401

from store import open_store
from store.views import (
    VIEW_NAMES,
    add_noise,
    eval_starts,
    make_view,
    mix_log_mel,
    normalize_fbank,
    random_resized_crop_box,
    random_roll,
    spec_augment,
    window,
)
from store.views.labels import NO_LABEL, LabelView
from store.views.render import IMAGENET_MEAN, IMAGENET_STD
from store.views.rng import sample_generator
from store.views.video import ClipView

torch.set_num_threads(1)

EXPECTED_VIDEO = {
    "mavil_pretrain": (8, 3, 224, 224),
    "mavil_finetune": (8, 3, 224, 224),
    "mavil_eval": (8, 3, 224, 224),
    "mavil_eval10": (10, 8, 3, 224, 224),
    "cavmae_train": (3, 224, 224),
    "cavmae_eval": (3, 224, 224),
    "audio_train": None,
    "audio_eval": None,
    "video_train": (8, 3, 224, 224),
    "video_eval": (8, 3, 224, 224),
}
# the most negative / positive ImageNet-normalised pixel values (0 and 255)
PIX_LO = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
PIX_HI = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", VIEW_NAMES)
def test_every_view_shape_dtype_range(name: str, zarr_store: str) -> None:  # noqa: F811
    st = open_store(zarr_store)
    view = make_view(name, num_classes=5)
    for pos in range(len(st)):
        clip = st.get(pos)
        out = view(clip, sample_generator(1, 0, pos))
        if name.startswith("video"):
            assert "audio" not in out
        else:
            _check_audio(out, clip)
        shape = EXPECTED_VIDEO[name]
        if shape is None:
            assert "video" not in out
        else:
            video = out["video"]
            assert video.shape == shape and video.dtype == torch.float32
            assert video.min() >= PIX_LO - 1e-4 and video.max() <= PIX_HI + 1e-4
            if not clip.has_video:
                assert torch.count_nonzero(video) == 0 and out["has_video"] is False
            else:
                assert video.std() > 0.05
        label = out["label"]
        assert label.shape == (5,) and label.dtype == torch.float32
        assert 0 <= label.min() and label.max() <= 1
        if out["mix_lambda"] == 1.0:
            assert label.sum() == len(set(clip.labels))


def _check_audio(out: dict, clip) -> None:
    audio = out["audio"]
    assert audio.shape == (1, 1024, 128) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all()
    if clip.has_audio:
        # normalised log-mel: roughly zero-mean, unit-scale, nothing absurd
        assert audio.abs().max() < 30 and audio.std() > 0.05
    else:
        assert torch.count_nonzero(audio) == 0 and out["has_audio"] is False


def test_fbank_normalisation_matches_hand_computation() -> None:
    x = torch.randn(1024, 128) * 3 - 5
    y = normalize_fbank(x, -4.268, 4.569)
    assert torch.allclose(y[10, 7], (x[10, 7] + 4.268) / 4.569)
    y2 = normalize_fbank(x, -4.268, 4.569, std_scale=2.0)  # AudioMAE's /(2 * std)
    assert torch.allclose(y2[3, 100], (x[3, 100] + 4.268) / (2 * 4.569))
    view = make_view("audio_eval", norm={"mean": -4.0, "std": 2.0, "scale": 1.0},
                     labels=False)
    fb = torch.randn(998, 128)
    clip = type(
        "C",
        (),
        {
            "clip_id": "x",
            "labels": [],
            "fbank": fb,
            "audio_frames": 998,
            "has_audio": True,
            "has_video": False,
            "frames": [],
        },
    )()
    out = view(clip, g())["audio"][0]
    assert torch.allclose(out[:998], (fb + 4.0) / 2.0)
    assert torch.allclose(out[998:], torch.full((26, 128), 2.0))  # zero pad -> (0+4)/2


def test_spec_augment_matches_torchaudio_and_hand() -> None:
    x = torch.randn(1024, 128)
    for seed in range(20):
        torch.manual_seed(seed)
        ref = torchaudio.transforms.FrequencyMasking(48)(x.T.unsqueeze(0))
        ref = torchaudio.transforms.TimeMasking(192)(ref).squeeze(0).T
        ours = spec_augment(x, 192, 48, g(seed))
        assert torch.equal(ours, ref)
        # hand: the masked set is one band of < 48 mel bins and one span of < 192 frames
        zero_cols = (ours == 0).all(dim=0).nonzero().flatten()
        zero_rows = (ours == 0).all(dim=1).nonzero().flatten()
        for idx, limit in ((zero_cols, 48), (zero_rows, 192)):
            if len(idx):
                assert len(idx) < limit and idx.max() - idx.min() + 1 == len(idx)
        kept = torch.ones_like(x, dtype=torch.bool)
        kept[:, zero_cols] = False
        kept[zero_rows, :] = False
        assert torch.equal(ours[kept], x[kept])


def test_random_roll_is_cyclic_over_real_frames() -> None:
    x = torch.arange(1024.0).unsqueeze(1).repeat(1, 128)
    x[998:] = -1.0  # padding
    rolled, start = random_roll(x, 998, g(3))
    expect = torch.cat([torch.arange(start, 998.0), torch.arange(0.0, start)])
    assert torch.equal(rolled[:998, 0], expect)
    assert (rolled[998:] == -1).all()
    starts = {random_roll(x, 998, g(s))[1] for s in range(50)}
    assert len(starts) > 40 and all(0 <= s < 998 for s in starts)


def test_noise_is_20db_snr() -> None:
    x = torch.randn(1024, 128) * 0.8 + 0.3
    noisy = add_noise(x, g(1), snr_db=20.0)
    noise = noisy - x
    snr = 10 * math.log10(float(x.pow(2).mean() / noise.pow(2).mean()))
    assert abs(snr - 20.0) < 0.2
    off = add_noise(x, g(1), mode="official")  # U(0,1) * u / 10, then a small roll
    assert off.shape == x.shape and not torch.equal(off, x)


def test_crop_box_matches_torchvision_get_params() -> None:
    for h, w in ((202, 360), (360, 202), (720, 1280), (50, 400), (400, 50)):
        img = torch.zeros(3, h, w)
        for seed in range(25):
            torch.manual_seed(seed)
            ref = T.RandomResizedCrop.get_params(img, scale=[0.2, 1.0], ratio=[3 / 4, 4 / 3])
            assert random_resized_crop_box(h, w, g(seed)) == tuple(ref)


def test_center_crop_close_to_resize_then_center_crop(zarr_store: str) -> None:  # noqa: F811
    clip = open_store(zarr_store).get("earth_000_0000")
    ours = make_view("mavil_eval", labels=False)(clip, g())["video"]
    frames = clip.decode_frames()[6:14]  # eval window: centre of 20 frames
    ref = T.Compose(
        [
            T.Resize(224, antialias=True),
            T.CenterCrop(224),
            T.ConvertImageDtype(torch.float32),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    ref_frames = torch.stack([ref(f) for f in frames])
    assert ours.shape == ref_frames.shape
    assert (ours - ref_frames).abs().mean() < 0.05  # same crop, sub-pixel offset only


def test_video_window_loops_cyclically_on_a_5s_clip(any_store: str) -> None:  # noqa: F811
    st = open_store(any_store)
    clip = st.get("bigbuckbunny_001_0000")  # 5.3 s -> 11 frames at 2 fps
    n = len(clip.frames)
    assert 10 <= n <= 11
    assert window(n - 3, n) == [n - 3, n - 2, n - 1, 0, 1, 2, 3, 4]
    assert window(0, 5) == [0, 1, 2, 3, 4, 0, 1, 2]
    view = ClipView(train=True)
    decoded = clip.decode_frames()
    seen_wrap = False
    for seed in range(40):
        plan = view.plan(n, clip.height, clip.width, g(seed))
        idx = [plan.frames[i] for i in plan.order.tolist()]
        start = idx[0]
        assert idx == window(start, n)
        seen_wrap |= start > n - 8
    assert seen_wrap
    # the rendered clip is those frames: check against a direct render of the same plan
    plan = view.plan(n, clip.height, clip.width, g(7))
    from store.views.render import render_frames

    direct = render_frames(decoded[plan.frames], plan.box, 224, plan.flip)[plan.order]
    assert torch.allclose(view(clip, g(7))["video"], direct)


@pytest.mark.parametrize("name", ["mavil_pretrain", "mavil_eval10"])
def test_cpu_video_views_give_one_memory_order(name: str, zarr_store: str) -> None:  # noqa: F811
    """Every CPU video sample is channels-last in memory (what crop_resize leaves; eval10
    also gathers): with video, and the zeros of a clip without it, so that a batch's
    samples share one layout (a torch.compile'd model sees one stride pattern)."""
    from dataclasses import replace

    view = make_view(name, labels=False, pixels="uint8")
    clip = open_store(zarr_store).get("earth_000_0000")
    video = view(clip, g())["video"]
    blank = view(replace(clip, has_video=False), g())["video"]
    assert video.shape == blank.shape and video.stride() == blank.stride()
    assert video.stride()[-3] == 1 and video.movedim(-3, -1).is_contiguous()
    assert not blank.any()


def test_eval_windows_uniform_and_cover() -> None:
    for n in (20, 11, 15, 9):
        starts = eval_starts(n)
        assert len(starts) == 10 and starts[0] == 0 and starts[-1] == n - 8
        steps = np.diff(starts)
        assert steps.max() - steps.min() <= 1  # uniform up to rounding
        ideal = np.linspace(0, n - 8, 10)
        assert np.abs(np.array(starts) - ideal).max() <= 0.5
        covered = {i for s in starts for i in window(s, n)}
        assert covered == set(range(n))
    assert eval_starts(5) == [0] * 10  # shorter than a window: loop from the start


def test_eval_views_pick_the_right_frames(zarr_store: str) -> None:  # noqa: F811
    from store.views.crop import center_square_box
    from store.views.render import render_frames

    clip = open_store(zarr_store).get("earth_000_0000")
    n = len(clip.frames)
    every = render_frames(clip.decode_frames(), center_square_box(clip.height, clip.width))
    ten = make_view("mavil_eval10", labels=False)(clip, g())["video"]
    for k, s in enumerate(eval_starts(n)):
        assert torch.allclose(ten[k], every[window(s, n)])
    one = make_view("mavil_eval", labels=False)(clip, g())["video"]
    assert torch.allclose(one, every[(n - 8) // 2 : (n - 8) // 2 + 8])
    frame = make_view("cavmae_eval", labels=False)(clip, g())["video"]  # CAV-MAE: middle frame
    assert torch.allclose(frame, every[n // 2])


def test_labels_multi_hot_and_index() -> None:
    assert torch.equal(LabelView(5)([0, 3]), torch.tensor([1.0, 0, 0, 1, 0]))
    assert LabelView(5, multi_label=False)([3]).item() == 3
    assert LabelView(5, multi_label=False)([]).item() == NO_LABEL
    with pytest.raises(ValueError, match="outside the vocabulary"):
        LabelView(5)([7])


def _tone(freq: float, seconds: float = 2.0, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return 0.3 * torch.sin(2 * math.pi * freq * t)


def test_mixup_in_power_domain_approximates_waveform_mixing() -> None:
    from store.fbank import kaldi_fbank

    x, y = _tone(440.0), _tone(3100.0) * 0.5
    fx, fy = torch.from_numpy(kaldi_fbank(x)), torch.from_numpy(kaldi_fbank(y))
    n = fx.shape[0]
    for lam in (0.3, 0.5, 0.8):
        ref = torch.from_numpy(kaldi_fbank(lam * x + (1 - lam) * y))  # the official code's
        ours, valid = mix_log_mel(fx, n, fy, n, lam)
        geometric = lam * fx + (1 - lam) * fy  # mixing log values directly
        live = ref > ref.max() - 12  # bins within ~50 dB of the peak (not the -15.9 floor)
        err = (ours - ref)[live].abs().median()
        assert valid == n and err < 0.05
        assert (geometric - ref)[live].abs().median() > 5 * err
        # hand computation of the formula
        hand = torch.log(lam**2 * torch.exp(fx[5, 20]) + (1 - lam) ** 2 * torch.exp(fy[5, 20]))
        assert torch.allclose(ours[5, 20], hand, atol=1e-5)


def test_mixup_sample_mixes_labels_with_lambda(zarr_store: str) -> None:  # noqa: F811
    st = open_store(zarr_store)
    a, b = st.get("earth_000_0000"), st.get("bigbuckbunny_001_0000")
    view = make_view("mavil_finetune", num_classes=5, time_mask=0, freq_mask=0)
    out = view(a, g(2), partner=b)
    lam = out["mix_lambda"]
    assert 0 < lam < 1
    expect = lam * LabelView(5)(a.labels) + (1 - lam) * LabelView(5)(b.labels)
    assert torch.allclose(out["label"], expect)
    assert out["audio"].shape == (1, 1024, 128) and out["video"].shape == (8, 3, 224, 224)


def test_random_gain_adds_twice_log_magnitude() -> None:
    from store.views.audio import random_gain

    x = torch.randn(1024, 128)
    out = random_gain(x, 700, g(4))
    shift = out[:700] - x[:700]
    assert torch.allclose(shift, shift[0, 0].expand_as(shift), atol=1e-5)
    m = math.exp(float(shift[0, 0]) / 2)  # log-mel power: waveform * m adds 2 ln m
    assert 0.5 <= m <= 1.5 and torch.equal(out[700:], x[700:])


def test_flip_probability_is_one_half(zarr_store: str) -> None:  # noqa: F811
    """MAViL appendix: random horizontal flip with p = 0.5, one flip for all 8 frames."""
    from scipy.stats import binomtest

    from store.views.render import render_frames

    view = ClipView(train=True)
    flips = [view.plan(20, 202, 360, g(seed)).flip for seed in range(400)]
    assert binomtest(sum(flips), len(flips), 0.5).pvalue > 1e-3
    assert binomtest(sum(flips), len(flips), 0.3).pvalue < 1e-6  # the check can fail
    clip = open_store(zarr_store).get("earth_000_0000")
    seed = flips.index(True)
    plan = view.plan(len(clip.frames), clip.height, clip.width, g(seed))
    assert plan.flip
    unflipped = render_frames(clip.decode_frames()[plan.frames], plan.box, 224, False)
    assert torch.allclose(view(clip, g(seed))["video"], unflipped[plan.order].flip(-1))


def test_eval10_uses_the_same_full_audio_as_eval(zarr_store: str) -> None:  # noqa: F811
    """Supplement B.3: the 10 video windows share the clip's whole 10-s audio, unaugmented."""
    clip = open_store(zarr_store).get("earth_000_0000")
    norm = dict(mean=-4.0, std=3.0)
    ten = make_view("mavil_eval10", norm=norm, labels=False)(clip, g(1))["audio"]
    one = make_view("mavil_eval", norm=norm, labels=False)(clip, g(2))["audio"]
    hand = (clip.fbank.float() + 4.0) / 3.0
    assert torch.equal(ten, one) and torch.allclose(ten[0], hand)
