"""Reconstruction figures (MAViL appendix Fig. 1 / 3 layout) from a tiny stage-1 MAViL."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from train.models import build_model
from train.recon_figure import (
    can_reconstruct,
    reconstruction_figure,
    reconstructions,
    save_reconstruction_figure,
)

KW = dict(audio_size=(256, 128), num_frames=4, img_size=64)


@pytest.fixture(scope="module")
def model_and_batch():
    torch.manual_seed(0)
    model = build_model("mavil", "tiny", **KW)
    t = torch.linspace(0, 1, 256)
    audio = torch.sin(40 * t)[None, None, :, None] * torch.linspace(-1, 1, 128) + 0.1
    audio = torch.cat([audio, -audio])  # [2, 1, 256, 128], structured, non-constant
    video = torch.rand(2, 4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return model, audio, video


def test_reconstructions_keep_visible_patches_and_rng(model_and_batch):
    model, audio, video = model_and_batch
    model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    rec = reconstructions(model, audio, video, seed=7)
    assert torch.equal(torch.rand(3), expected_next)  # the training RNG is untouched
    assert model.training  # mode restored
    for name, x, ratio in (("audio", audio, model.mask_ratio),
                           ("video", video, model.video_mask_ratio)):
        removed = rec[f"{name}_removed"]
        assert removed.mean().item() == pytest.approx(ratio, abs=0.02)
        keep = removed < 0.5
        assert torch.equal(rec[f"{name}_pasted"][keep], x[keep])
        assert torch.equal(rec[f"{name}_masked"][~keep], torch.zeros_like(x)[~keep])
    again = reconstructions(model, audio, video, seed=7)  # same seed, same masks
    assert torch.equal(again["audio_removed"], rec["audio_removed"])


def test_figure_has_the_panels_and_pixels(model_and_batch, tmp_path):
    model, audio, video = model_and_batch
    assert can_reconstruct(model)
    assert not can_reconstruct(build_model("mavil", "tiny", target="features", **KW))
    fig = reconstruction_figure(model, audio, video, step=5)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    rows = ["original", "masked input", "reconstruction (visible patches kept)"]
    assert titles == [f"{kind}: {row}" for _clip in range(2) for row in rows
                      for kind in ("spectrogram", "frames (2 fps)")]
    assert "step 5" in fig._suptitle.get_text()
    import matplotlib.pyplot as plt

    plt.close(fig)

    png = save_reconstruction_figure(model, audio, video, tmp_path / "images" / "r.png", step=5)
    assert png.is_file() and not list(png.parent.glob(".*"))  # no temp file left
    pixels = mpimg.imread(png)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 700  # 100 dpi, readable size
    # every panel row carries content: no horizontal band of the figure is blank
    rgb = pixels[..., :3]
    bands = np.array_split(rgb[int(0.05 * len(rgb)):], 6)
    assert all(band.std() > 0.05 for band in bands)


def test_every_n_steps_into_the_run_and_tensorboard(model_and_batch, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from train.observe import RunLogger
    from train.recon_figure import maybe_save_reconstructions

    model, audio, video = model_and_batch
    batch = {"audio": torch.cat([torch.zeros_like(audio[:1]), audio]),
             "video": torch.cat([video[:1], video]),
             "has_audio": torch.tensor([False, True, True]),
             "has_video": torch.tensor([True, True, True])}
    log = RunLogger(tmp_path, progress=False)
    assert maybe_save_reconstructions(3, 4, model, batch, tmp_path, log) is None  # not due
    assert maybe_save_reconstructions(4, 0, model, batch, tmp_path, log) is None  # off
    png = maybe_save_reconstructions(4, 4, model, batch, tmp_path, log)
    assert png == tmp_path / "images" / "recon_00000004.png" and png.is_file()
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    [event] = acc.Images("reconstruction")
    assert event.step == 4 and event.width > 700
