"""The ONE Kaldi filterbank call of the project (store.json owns its parameters).

MAViL supplement B.1 / AudioMAE / AST / CAV-MAE: a 16 kHz mono waveform becomes 128
Kaldi mel bands from a 25 ms Hanning window every 10 ms; a 10 s clip gives 1024 x 128.
The call matches the references (AudioMAE ``dataset.py::_wav2fbank``, CAV-MAE
``dataloader.py::_wav2fbank``) exactly: the waveform mean is removed, then

    torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=16000,
        use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0,
        frame_shift=10)

and the result is zero-padded (``torch.nn.ZeroPad2d``, as AudioMAE/CAV-MAE do) or cut to
``target_frames`` (1024).

Known reference behaviour, kept on purpose: with a 400-sample window padded to a 512-point
FFT at 16 kHz (31.25 Hz per bin), the 128 HTK mel triangles at the low end are narrower
than one FFT bin, and mel channel 3 (0-based) covers no bin at all. Its energy is 0, so
after Kaldi's ``log(max(x, eps))`` it is the constant ``log(float32 eps)`` = -15.942 for
every frame of every clip. Models trained with AudioMAE/CAV-MAE checkpoints saw exactly
this, so the store keeps it; per-channel statistics must tolerate a zero-variance channel.

This module imports only numpy and torch (torchaudio lazily), so ``store`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from store.spec import default_fbank

# Kaldi options StoreSpec.fbank may carry besides the ones kaldi_fbank passes by name.
_PASSTHROUGH = ("remove_dc_offset", "preemphasis_coefficient", "round_to_power_of_two",
                "low_freq", "high_freq", "vtln_low", "vtln_high", "vtln_warp", "snip_edges",
                "raw_energy", "energy_floor", "min_duration", "use_log_fbank",
                "use_power", "subtract_mean")


def fbank_params(spec: Any = None) -> dict[str, Any]:
    """Resolve the fbank parameters from a StoreSpec, a plain dict, or the defaults
    (``store.spec.default_fbank``: the reference parameters, AudioMAE / CAV-MAE / AST)."""
    params = default_fbank()
    source = getattr(spec, "fbank", spec)
    if isinstance(source, Mapping):
        params.update(source)
    return params


def sample_rate_of(spec: Any = None) -> int:
    """The spec's sample rate (16 kHz by default)."""
    return int(getattr(spec, "sample_rate", 16000) or 16000)


def kaldi_fbank(waveform: np.ndarray | torch.Tensor, spec: Any = None) -> torch.Tensor:
    """Raw (unpadded) log-mel fbank ``[n_frames, num_mel_bins]`` float32.

    ``waveform`` is mono float in [-1, 1], shape ``[n]`` or ``[1, n]``. The mean is
    removed first, as in the references. Audio shorter than one window returns 0 frames.
    """
    from torchaudio.compliance import kaldi

    params = fbank_params(spec)
    sr = sample_rate_of(spec)
    wav = torch.as_tensor(waveform, dtype=torch.float32).reshape(1, -1)
    window = int(sr * params["frame_length_ms"] / 1000.0)
    if wav.shape[1] < window:
        return torch.zeros((0, int(params["num_mel_bins"])), dtype=torch.float32)
    wav = wav - wav.mean()
    # Any further Kaldi option the spec names (e.g. remove_dc_offset,
    # preemphasis_coefficient at their torchaudio defaults) is passed through unchanged.
    extra = {k: v for k, v in params.items() if k in _PASSTHROUGH}
    return kaldi.fbank(
        wav,
        htk_compat=bool(params["htk_compat"]),
        sample_frequency=sr,
        use_energy=bool(params["use_energy"]),
        window_type=str(params["window_type"]),
        num_mel_bins=int(params["num_mel_bins"]),
        dither=float(params["dither"]),
        frame_shift=float(params["frame_shift_ms"]),
        frame_length=float(params["frame_length_ms"]),
        **extra,
    )


def pad_or_cut(fbank: torch.Tensor, target_frames: int) -> torch.Tensor:
    """Zero-pad at the end (AudioMAE/CAV-MAE ``ZeroPad2d``) or cut to ``target_frames``."""
    n = fbank.shape[0]
    if n < target_frames:
        return torch.nn.functional.pad(fbank, (0, 0, 0, target_frames - n))
    return fbank[:target_frames]


def compute_fbank(waveform: np.ndarray | torch.Tensor, spec: Any = None) -> tuple[np.ndarray, int]:
    """Store-ready fbank: (float32 ``[target_frames, num_mel_bins]``, real frame count)."""
    params = fbank_params(spec)
    raw = kaldi_fbank(waveform, spec)
    fixed = pad_or_cut(raw, int(params["target_frames"]))
    return fixed.numpy(), int(min(raw.shape[0], int(params["target_frames"])))


def mel_channel_is_empty(channel: int, spec: Any = None) -> bool:
    """True when a mel channel covers no FFT bin (see module docstring: channel 3)."""
    from torchaudio.compliance import kaldi

    params = fbank_params(spec)
    sr = sample_rate_of(spec)
    window = int(sr * params["frame_length_ms"] / 1000.0)
    padded = 1 << (window - 1).bit_length()
    bins, _ = kaldi.get_mel_banks(int(params["num_mel_bins"]), padded, float(sr), 20.0, 0.0,
                                  100.0, -500.0, 1.0)
    return bool(bins[channel].abs().sum() == 0)


__all__ = ["compute_fbank", "fbank_params", "kaldi_fbank", "pad_or_cut",
           "mel_channel_is_empty"]
