"""Reconstruction figures of a stage-1 MAViL during training (MAViL appendix A, Fig. 1 / 3).

For each shown clip a 3-row group: the original spectrogram and video frames (top), the
masked input the encoders saw (middle; removed patches blank) and the decoders'
reconstruction with the visible patches pasted back (bottom), as the paper's figure and the
MAE demo show them. Inputs are un-normalised for display: spectrograms back to log-mel
(x * std_scale * std + mean, colour bar in log-mel units), frames back to RGB
(x * std + mean per channel, ImageNet statistics by default).

    # in the loop, rank 0, after the optimizer step (a no-op unless step % every == 0):
    maybe_save_reconstructions(step, cfg.train.image_every, model, batch, run_dir, log,
                               view=loader.dataset.view)
    # by hand:
    save_reconstruction_figure(model, audio[:2], video[:2], "recon.png", step=step)

The masks are drawn from a fixed seed inside a forked RNG, so the figure neither disturbs the
training RNG (exact resume) nor changes its masks from one step to the next (figures of
different steps compare like with like). Only raw-target MAViL models reconstruct their
inputs; :func:`can_reconstruct` says whether a model does (a stage-2 student predicts
teacher features, which have no picture).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from store.views.norm import PRESETS  # noqa: E402
from store.views.render import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

AUDIOSET_MEAN, AUDIOSET_STD = PRESETS["audiomae"].mean, PRESETS["audiomae"].std

ROWS = ("original", "masked input", "reconstruction (visible patches kept)")


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def can_reconstruct(model: nn.Module) -> bool:
    """Whether ``model`` (bare or DDP-wrapped) has decoders that predict its raw inputs."""
    model = _bare(model)
    return hasattr(model, "reconstruct") and getattr(model, "target", None) == "raw"


@torch.no_grad()
def reconstructions(model: nn.Module, audio: torch.Tensor, video: torch.Tensor,
                    seed: int = 0) -> dict[str, torch.Tensor]:
    """``model.reconstruct`` in eval mode and fp32 under a fixed-seed, forked RNG.

    The contrastive weights are zeroed meanwhile: the picture needs no InfoNCE, and under
    DDP its all-gather would wait for ranks that draw no figure."""
    model = _bare(model)
    devices = [audio.device] if audio.device.type == "cuda" else []
    was_training, weights = model.training, (model.alpha, model.beta)
    model.eval()
    model.alpha = model.beta = 0.0
    try:
        with torch.random.fork_rng(devices=devices), torch.autocast(audio.device.type,
                                                                     enabled=False):
            torch.manual_seed(seed)
            out = model.reconstruct(audio.float(), video.float())
    finally:
        model.train(was_training)
        model.alpha, model.beta = weights
    return {k: v.float().cpu() for k, v in out.items()}


def _spectrogram(x: torch.Tensor, mean: float, std: float) -> np.ndarray:
    """[1, T, F] normalised fbank -> [F, T] log-mel (frequency up, time along)."""
    return (x[0] * std + mean).T.numpy()


def _frames(x: torch.Tensor, mean: tuple, std: tuple) -> np.ndarray:
    """[T, 3, H, W] normalised frames -> one [H, T * W, 3] RGB strip in [0, 1]."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    rgb = (x * s + m).clamp(0, 1).permute(0, 2, 3, 1)  # T, H, W, 3
    return torch.cat(list(rgb), dim=1).numpy()


def _strip_separators(ax: plt.Axes, frames: int, width: int, height: int) -> None:
    for t in range(1, frames):
        ax.axvline(t * width - 0.5, color="black", linewidth=1.5)
    ax.set_xticks([(t + 0.5) * width for t in range(frames)], [str(t) for t in range(frames)])
    ax.set_yticks([])
    ax.set_ylim(height - 0.5, -0.5)


def reconstruction_figure(model: nn.Module, audio: torch.Tensor, video: torch.Tensor, *,
                          step: int | None = None, seed: int = 0,
                          audio_mean: float = AUDIOSET_MEAN, audio_std: float = AUDIOSET_STD,
                          std_scale: float = 1.0, video_mean: tuple = IMAGENET_MEAN,
                          video_std: tuple = IMAGENET_STD, fps: float = 2.0,
                          frame_shift_ms: float = 10.0) -> plt.Figure:
    """The matplotlib figure for clips ``audio`` [B, 1, T, F] and ``video`` [B, T, 3, H, W]."""
    rec = reconstructions(model, audio, video, seed)
    a_std = audio_std * std_scale
    n, frames, _, height, width = rec["video_masked"].shape
    spec_len = audio.shape[-2]
    fig_w = 4.0 + 1.25 * frames
    fig, axes = plt.subplots(3 * n, 2, figsize=(fig_w, 1.5 * 3 * n + 0.8), squeeze=False,
                             gridspec_kw={"width_ratios": [4.0, 1.25 * frames]})
    cmap = plt.get_cmap("magma").with_extremes(bad="white")
    seconds = spec_len * frame_shift_ms / 1000
    for i in range(n):
        original = _spectrogram(audio[i].float().cpu(), audio_mean, a_std)
        vmin, vmax = np.percentile(original, [1, 99.5])
        silent = vmax - vmin < 1e-6  # silent or missing audio: a constant input
        if silent:
            vmin, vmax = vmin - 1.0, vmax + 1.0
        a_removed = rec["audio_removed"][i, 0].T.numpy() > 0.5
        v_removed = rec["video_removed"][i].amax(1, keepdim=True).expand(-1, 3, -1, -1)
        masked_frames = _frames(video[i].float().cpu(), video_mean, video_std)
        masked_frames[_frames(v_removed, (0, 0, 0), (1, 1, 1)) > 0.5] = 0.93
        panels = [
            (original, _frames(video[i].float().cpu(), video_mean, video_std)),
            (np.where(a_removed, np.nan, original), masked_frames),
            (_spectrogram(rec["audio_pasted"][i], audio_mean, a_std),
             _frames(rec["video_pasted"][i], video_mean, video_std)),
        ]
        for r, (spec, strip) in enumerate(panels):
            ax_a, ax_v = axes[3 * i + r]
            im = ax_a.imshow(spec, origin="lower", aspect="auto", cmap=cmap, vmin=vmin,
                             vmax=vmax, interpolation="nearest",
                             extent=(0, seconds, 0, spec.shape[0]))
            ax_a.set_ylabel(f"clip {i}\nmel bin", fontsize=8)
            ax_a.tick_params(labelsize=7)
            ax_v.imshow(strip, interpolation="nearest")
            _strip_separators(ax_v, frames, width, height)
            ax_v.tick_params(labelsize=7)
            note = " (constant: silent clip)" if silent else ""
            ax_a.set_title(f"spectrogram: {ROWS[r]}{note}",
                           fontsize=9)
            ax_v.set_title(f"frames ({fps:g} fps): {ROWS[r]}", fontsize=9)
            if r == 2:
                ax_a.set_xlabel("time (s)", fontsize=8)
                ax_v.set_xlabel("frame", fontsize=8)
            else:
                ax_a.set_xticklabels([])
            bar = fig.colorbar(im, ax=ax_a, pad=0.01, fraction=0.04)
            bar.ax.tick_params(labelsize=6)
            bar.set_label("log-mel", fontsize=7)
    m = _bare(model)
    ratio_a, ratio_v = getattr(m, "mask_ratio", None), getattr(m, "video_mask_ratio", None)
    title = "MAViL stage-1 reconstructions"
    if step is not None:
        title += f" at step {step}"
    if ratio_a is not None:
        title += f" (masking: audio {ratio_a:.0%}, video {ratio_v:.0%})"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def save_reconstruction_figure(model: nn.Module, audio: torch.Tensor, video: torch.Tensor,
                               path: str | Path, **kwargs) -> Path:
    """Draw :func:`reconstruction_figure` and write it as a PNG atomically (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = reconstruction_figure(model, audio, video, **kwargs)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def display_norm(view: object | None) -> dict[str, object]:
    """The un-normalisation of a store view (``SampleView``): its audio view's mean / std /
    std_scale; frames use the ImageNet statistics the store's renderer applies."""
    audio = getattr(view, "audio", None)
    if audio is None:
        return {}
    norm = audio.norm  # store/views/norm.py: (x - mean) / (scale * std)
    return {"audio_mean": float(norm.mean), "audio_std": float(norm.std),
            "std_scale": float(norm.scale)}


def _flag(batch: dict, key: str, i: int) -> bool:
    values = batch.get(key)
    return True if values is None else bool(values[i])


def maybe_save_reconstructions(step: int, every: int, model: nn.Module, batch: dict,
                               run_dir: str | Path, log: object | None = None,
                               view: object | None = None, clips: int = 2) -> Path | None:
    """Every ``every`` steps (0: never), on a model that reconstructs: write
    ``RUN/images/recon_STEP.png`` from the first ``clips`` clips of ``batch`` and show it
    in TensorBoard through ``log.image``. Call it on rank 0 only."""
    if not every or step % every or not can_reconstruct(model):
        return None
    device = next(_bare(model).parameters()).device
    n = len(batch["audio"])
    complete = [i for i in range(n)
                if _flag(batch, "has_audio", i) and _flag(batch, "has_video", i)]
    pick = (complete + [i for i in range(n) if i not in complete])[:clips]  # both streams first
    audio = batch["audio"][pick].to(device)
    video = batch["video"][pick].to(device)
    path = Path(run_dir) / "images" / f"recon_{step:08d}.png"
    png = save_reconstruction_figure(model, audio, video, path, step=step, **display_norm(view))
    if log is not None and hasattr(log, "image"):
        log.image(step, "reconstruction", png)
    return png
