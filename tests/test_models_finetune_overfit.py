"""Every fine-tuning model (MAViL audio / video / audio+video, CAV-MAE, Audiovisual MAE), in a
tiny configuration, fits the multi-hot labels of four real clips (tests/model_fixtures.py)
with BCE, fine-tuning masking and drop path on: the eval-mode loss falls by a large factor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import real_clips  # noqa: F401  (fixture)

from train.models import build_model

pytestmark = pytest.mark.slow
STEPS, LR, MIN_FACTOR = 100, 3e-3, 4.0
LABELS = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 1], [1, 1, 0, 0, 0.]])


@pytest.fixture(scope="module")
def small(real_clips):  # noqa: F811
    torch.set_num_threads(1)
    video = real_clips["video"][:, ::2]                        # 4 frames at 1 fps
    b, t = video.shape[:2]
    video = F.interpolate(video.flatten(0, 1), size=(64, 64), mode="bilinear",
                          antialias=True).reshape(b, t, 3, 64, 64)
    return {"audio": real_clips["audio"][:, :, :256].contiguous(), "video": video,
            "frame": video[:, t // 2].contiguous()}


CASES = [  # (registered name, extra kwargs, which video input)
    ("mavil_audio_ft", dict(audio_size=(256, 128)), "video"),
    ("mavil_video_ft", dict(num_frames=4, img_size=64), "video"),
    ("mavil_av_ft", dict(audio_size=(256, 128), num_frames=4, img_size=64), "video"),
    ("cav_mae_ft", dict(audio_size=(256, 128), img_size=64), "frame"),
    ("av_mae_ft", dict(audio_size=(256, 128), num_frames=4, img_size=64), "video"),
]


@pytest.mark.parametrize("name,kw,video_key", CASES, ids=[c[0] for c in CASES])
def test_finetune_model_fits_real_clips(small, name, kw, video_key):
    torch.manual_seed(0)
    model = build_model(name, "tiny", num_classes=LABELS.shape[1], **kw)
    audio, video = small["audio"], small[video_key]

    def loss() -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(model(audio, video), LABELS)

    model.eval()
    with torch.no_grad():
        first = loss().item()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    for _ in range(STEPS):
        opt.zero_grad()
        loss().backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        last = loss().item()
    print(f"\n{name}: eval BCE {first:.3f} -> {last:.3f} in {STEPS} steps")
    assert first / last > MIN_FACTOR
