"""Each peer model, in a tiny configuration, overfits four real clips on CPU.

Inputs come from the shared media (tests/model_fixtures.py: ffmpeg + Kaldi fbank), cropped
to keep each test under ~20 s on one core: the first 256 fbank frames (2.56 s, 16 x 8
patches) and 4 frames at 112 x 112 (2 x 7 x 7 tubelets; CAV-MAE takes one of them). The
masks are fixed so the loss can only fall by learning these clips.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import real_clips  # noqa: F401  (fixture)

from train.models.av_mae import build_av_mae
from train.models.cav_mae import build_cav_mae
from train.models.uni_mae import build_audio_mae, build_video_mae

pytestmark = pytest.mark.slow
STEPS, LR, MIN_FACTOR = 150, 2e-3, 4.0
AUDIO = dict(audio_size=(256, 128))
VIDEO = dict(num_frames=4, img_size=112)
DECODER = dict(dim=64, depth=1, heads=4)


@pytest.fixture(scope="module")
def small(real_clips):  # noqa: F811
    torch.set_num_threads(1)
    video = real_clips["video"][:, ::2]                        # 4 of the 8 frames (1 fps)
    b, t = video.shape[:2]
    video = F.interpolate(video.flatten(0, 1), size=(112, 112), mode="bilinear",
                          antialias=True).reshape(b, t, 3, 112, 112)
    g = torch.Generator().manual_seed(0)
    return {"audio": real_clips["audio"][:, :, :256].contiguous(), "video": video,
            "frame": video[:, t // 2].contiguous(),
            "noise_a": torch.rand(b, 128, generator=g), "noise_v": torch.rand(b, 98, generator=g),
            "noise_f": torch.rand(b, 49, generator=g)}


def overfit(model: torch.nn.Module, step) -> tuple[float, float]:
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    losses = []
    for _ in range(STEPS):
        loss = step(model)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = losses[0], min(losses[-5:])
    print(f"\n{type(model).__name__}: loss {first:.3f} -> {last:.3f} "
          f"({first / last:.1f}x in {STEPS} steps)")
    return first, last


def test_cav_mae_overfits_real_clips(small):
    torch.manual_seed(0)
    # raw-pixel targets like the other overfit tests (the Eq. 9 per-patch normalisation,
    # the default, is checked in test_models_peers.py and needs far more steps to memorise)
    model = build_cav_mae("tiny", decoder_dim=64, img_size=112, norm_pix_loss=False, **AUDIO)
    first, last = overfit(model, lambda m: m(small["audio"], small["frame"],
                                             noise_a=small["noise_a"], noise_v=small["noise_f"]))
    assert first / last > MIN_FACTOR


@pytest.mark.parametrize("objective,encoder", [("joint", "mid"), ("inpaint_both", "early")])
def test_av_mae_overfits_real_clips(small, objective, encoder):
    torch.manual_seed(0)
    model = build_av_mae("tiny", decoder_dim=64, encoder=encoder, objective=objective,
                         **AUDIO, **VIDEO)
    first, last = overfit(model, lambda m: m(small["audio"], small["video"],
                                             noise_a=small["noise_a"], noise_v=small["noise_v"]))
    assert first / last > MIN_FACTOR


def test_audio_mae_overfits_real_clips(small):
    torch.manual_seed(0)
    model = build_audio_mae("tiny", decoder=DECODER, **AUDIO)
    first, last = overfit(model, lambda m: m(small["audio"], noise=small["noise_a"]))
    assert first / last > MIN_FACTOR


def test_video_mae_overfits_real_clips(small):
    torch.manual_seed(0)
    model = build_video_mae("tiny", decoder=DECODER, **VIDEO)
    first, last = overfit(model, lambda m: m(small["video"], noise=small["noise_v"]))
    assert first / last > MIN_FACTOR
