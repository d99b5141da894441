"""Audio view: stored raw log-mel fbank -> normalised model input [1, 1024, 128].

Order of operations (MAViL appendix "Data Preprocessing", Table 10; AudioMAE/AST code order):

    raw log-mel (stored, float16 [1024, 128], ``audio_frames`` real frames, rest padding)
      -> [mixup in the power domain, see mixup.py]        (fine-tuning only)
      -> R: random start with cyclic roll over the real frames
      -> [random gain: +2 ln(m), m ~ Beta(10, 10) + 0.5]    ("magnitude augmentation", FT)
      -> SpecAugment time / frequency masks on raw log-mel (fill 0.0, as the official code)
      -> normalise: (x - mean) / (scale * std)              (a named preset, store/views/norm.py)
      -> N: additive Gaussian noise at ``snr_db`` (20 dB)   (VGGSound / SPC fine-tuning)

Every random draw takes an explicit ``torch.Generator`` so a sample's augmentation is a pure
function of its seed (this is what makes mid-epoch resume exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from store.views.norm import PRESETS, AudioNorm
from store.views.rng import beta

TARGET_FRAMES = 1024
NUM_MEL_BINS = 128


def fit_length(fbank: torch.Tensor, target: int = TARGET_FRAMES) -> torch.Tensor:
    """Cut or zero-pad a [time, mel] fbank to ``target`` frames (AST / AudioMAE convention)."""
    n = fbank.shape[0]
    if n == target:
        return fbank
    if n > target:
        return fbank[:target]
    pad = fbank.new_zeros(target - n, fbank.shape[1])
    return torch.cat([fbank, pad], dim=0)


def normalize_fbank(
    fbank: torch.Tensor, mean: float, std: float, std_scale: float = 1.0
) -> torch.Tensor:
    """(x - mean) / (std_scale * std); std_scale 2 in the AudioMAE / AST code, 1 in CAV-MAE's."""
    return (fbank - mean) / (std * std_scale)


def random_roll(fbank: torch.Tensor, valid: int, g: torch.Generator) -> tuple[torch.Tensor, int]:
    """Table 10 "R": a random starting point, rolled cyclically over the ``valid`` real frames.

    Returns the rolled fbank and the start frame. Padding after ``valid`` stays where it is,
    which equals rolling the waveform before the fbank (AudioMAE ``_roll_mag_aug``).
    """
    valid = max(0, min(valid, fbank.shape[0]))
    if valid < 2:
        return fbank, 0
    start = int(torch.randint(0, valid, (1,), generator=g))
    out = fbank.clone()
    out[:valid] = torch.roll(fbank[:valid], shifts=-start, dims=0)
    return out, start


def random_gain(fbank: torch.Tensor, valid: int, g: torch.Generator) -> torch.Tensor:
    """Magnitude augmentation: waveform * m with m ~ Beta(10, 10) + 0.5 (AudioMAE).

    Kaldi fbank is log mel *power*, so scaling the waveform by m adds 2 ln m to real frames.
    """
    u = beta(10.0, 10.0, g)
    out = fbank.clone()
    out[:valid] = out[:valid] + 2.0 * math.log(u + 0.5)
    return out


def mask_interval(size: int, mask_param: int, g: torch.Generator) -> tuple[int, int]:
    """One SpecAugment mask [start, end) with torchaudio ``mask_along_axis`` semantics.

    width v ~ U(0, mask_param), start v0 ~ U(0, size - v);
    masked indices [floor(v0), floor(v0) + floor(v)).
    Same draws, in the same order, as torchaudio.transforms.{Frequency,Time}Masking.
    """
    if mask_param < 1:
        return 0, 0
    value = torch.rand(1, generator=g) * mask_param
    min_value = torch.rand(1, generator=g) * (size - value)
    start = int(min_value.long())
    return start, start + int(value.long())


def spec_augment(
    fbank: torch.Tensor,
    time_mask: int,
    freq_mask: int,
    g: torch.Generator,
    fill: float = 0.0,
) -> torch.Tensor:
    """SpecAugment (Park et al. 2019), one frequency then one time mask (Table 10: 192/48).

    ``fbank`` is [time, mel]. The official AST/AudioMAE/CAV-MAE code masks the *raw* log-mel
    with 0.0 before normalising; we keep that order and value by default.
    """
    out = fbank.clone()
    f0, f1 = mask_interval(fbank.shape[1], freq_mask, g)
    t0, t1 = mask_interval(fbank.shape[0], time_mask, g)
    out[:, f0:f1] = fill
    out[t0:t1, :] = fill
    return out


def add_noise(
    x: torch.Tensor, g: torch.Generator, snr_db: float = 20.0, mode: str = "snr"
) -> torch.Tensor:
    """Table 10 "N": additive noise on the normalised spectrogram.

    mode "snr" (default, the paper's wording): Gaussian noise whose power is the spectrogram's
    mean power / 10^(snr_db/10), i.e. sigma = rms(x) * 10^(-snr_db/20) (0.1 * rms at 20 dB).
    mode "official": what the AudioMAE / CAV-MAE code does for "noise": x + U(0,1) * u / 10 with
    u ~ U(0,1), then a roll of U{-10..9} frames.
    """
    if mode == "snr":
        rms = x.pow(2).mean().sqrt()
        sigma = rms * 10.0 ** (-snr_db / 20.0)
        return x + torch.randn(x.shape, generator=g) * sigma
    if mode == "official":
        scale = float(torch.rand(1, generator=g)) / 10.0
        out = x + torch.rand(x.shape, generator=g) * scale
        shift = int(torch.randint(-10, 10, (1,), generator=g))
        return torch.roll(out, shift, dims=0)
    raise ValueError(f"unknown noise mode {mode!r}; expected 'snr' or 'official'")


@dataclass
class AudioView:
    """Stored raw log-mel -> float32 [1, target_frames, 128] model input.

    ``roll``: Table 10 "R"; ``noise_snr_db``: Table 10 "N" (None = off); ``time_mask`` /
    ``freq_mask``: SpecAugment widths (0 = off; 192/48 for AS fine-tuning); ``gain``:
    magnitude augmentation; ``norm``: the normalisation preset (store/views/norm.py).
    Clips without audio give zeros (the dataset mean after normalisation) and the sample's
    ``has_audio`` flag is False.
    """

    norm: AudioNorm = PRESETS["audiomae"]
    target_frames: int | None = None  # None: the store's (filled by the dataset), else 1024
    roll: bool = False
    gain: bool = False
    time_mask: int = 0
    freq_mask: int = 0
    noise_snr_db: float | None = None
    noise_mode: str = "snr"

    def raw(self, fbank: torch.Tensor) -> torch.Tensor:
        """Stored fbank (any float dtype) -> float32 [target_frames, mel] raw log-mel."""
        return fit_length(fbank.float(), self.target_frames or TARGET_FRAMES)

    def __call__(self, fbank: torch.Tensor | None, valid: int, g: torch.Generator) -> torch.Tensor:
        if fbank is None:
            return torch.zeros(1, self.target_frames or TARGET_FRAMES, NUM_MEL_BINS,
                               dtype=torch.float32)
        x = self.raw(fbank)
        valid = min(int(valid), x.shape[0])
        if self.roll:
            x, _ = random_roll(x, valid, g)
        if self.gain:
            x = random_gain(x, valid, g)
        if self.time_mask or self.freq_mask:
            x = spec_augment(x, self.time_mask, self.freq_mask, g)
        x = self.norm(x)
        if self.noise_snr_db is not None:
            x = add_noise(x, g, self.noise_snr_db, self.noise_mode)
        return x.unsqueeze(0).contiguous()
