"""The ONE Kaldi filterbank of the project (store.json owns its parameters), in NumPy.

MAViL supplement B.1 / AudioMAE / AST / CAV-MAE: a 16 kHz mono waveform becomes 128
Kaldi mel bands from a 25 ms Hanning window every 10 ms; a 10 s clip gives 1024 x 128.
The references (AudioMAE ``dataset.py::_wav2fbank``, CAV-MAE ``dataloader.py::_wav2fbank``)
remove the waveform mean, then call

    torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=16000,
        use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0,
        frame_shift=10)

and zero-pad (``torch.nn.ZeroPad2d``) or cut the result to ``target_frames`` (1024). This
module re-derives that computation (Kaldi's ``compute-fbank-feats``: frames, per-frame DC
removal, pre-emphasis, window, power spectrum of the zero-padded FFT, HTK-mel triangles,
``log(max(x, eps))``) in float32 NumPy, so a shard task needs no torch: one ``import torch``
is 1.5-2 s on a 2-core box, more than a small job's work (``pipeline bench --startup``),
and takes a task process from 125 to 659 MB resident. kaldi-native-fbank is no substitute:
it refuses these parameters ("num_mel_bins too large", see below).

Fidelity (tests/test_pipeline_fbank.py): against that exact torchaudio call the float32
output differs only by float32 rounding (FFT, BLAS and ``log`` implementations differ):
mean |error| against the float64 formula 2e-6 (torchaudio's own: 4e-7..4e-6), at most
4e-3 in near-empty bands where the log magnifies rounding (torchaudio's own error there:
3e-3); the float16 values the store keeps are equal but for <= 0.25 % one-step roundings.
Also checked against kaldi-native-fbank (80 bins) and hand-computed HTK mel peaks. The mel
weights are computed in float32 as Kaldi and torchaudio compute them (``mel_banks``).

Known reference behaviour, kept on purpose: with a 400-sample window padded to a 512-point
FFT at 16 kHz (31.25 Hz per bin), the 128 HTK mel triangles at the low end are narrower
than one FFT bin, and mel channel 3 (0-based) covers no bin at all. Its energy is 0, so
after Kaldi's ``log(max(x, eps))`` it is the constant ``log(float32 eps)`` = -15.942 for
every frame of every clip. Models trained with AudioMAE/CAV-MAE checkpoints saw exactly
this, so the store keeps it; per-channel statistics must tolerate a zero-variance channel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from store.spec import default_fbank

EPS = np.float32(np.finfo(np.float32).eps)  # Kaldi's floor before the log
WINDOWS = ("hanning", "hamming", "povey", "rectangular", "blackman")
# Kaldi options a plain-dict spec may carry besides StoreSpec.fbank's (Kaldi defaults).
_EXTRA = {"low_freq": 20.0, "high_freq": 0.0, "round_to_power_of_two": True,
          "snip_edges": True, "raw_energy": True, "energy_floor": 1.0, "use_log_fbank": True,
          "use_power": True, "subtract_mean": False, "blackman_coeff": 0.42,
          "vtln_warp": 1.0}


def fbank_params(spec: Any = None) -> dict[str, Any]:
    """Resolve the fbank parameters from a StoreSpec, a plain dict, or the defaults
    (``store.spec.default_fbank``: the reference parameters, AudioMAE / CAV-MAE / AST)."""
    params = {**default_fbank(), **_EXTRA}
    source = getattr(spec, "fbank", spec)
    if isinstance(source, Mapping):
        unknown = sorted(set(source) - set(params))
        if unknown:
            raise ValueError(f"unknown fbank options {unknown}; known: {sorted(params)}")
        params.update(source)
    if float(params["dither"]) != 0.0:
        raise ValueError("dither must be 0: stored features are deterministic (AudioMAE, "
                         "CAV-MAE and AST use dither=0.0)")
    if float(params["vtln_warp"]) != 1.0:
        raise ValueError("vtln_warp != 1 (speaker normalisation) is not supported")
    if params["window_type"] not in WINDOWS:
        raise ValueError(f"unknown window_type {params['window_type']!r}; use one of "
                         f"{', '.join(WINDOWS)}")
    return params


def sample_rate_of(spec: Any = None) -> int:
    """The spec's sample rate (16 kHz by default)."""
    return int(getattr(spec, "sample_rate", 16000) or 16000)


def mel(freq: np.ndarray) -> np.ndarray:
    """HTK mel scale, as Kaldi: 1127 ln(1 + f / 700), in float32 as Kaldi computes it."""
    f = np.asarray(freq, dtype=np.float32)
    return np.float32(1127.0) * np.log(np.float32(1.0) + f / np.float32(700.0))


@lru_cache(maxsize=16)
def mel_banks(num_bins: int, padded: int, sample_rate: float, low_freq: float = 20.0,
              high_freq: float = 0.0) -> np.ndarray:
    """Kaldi's triangular mel filters ``[num_bins, padded // 2]`` (float32, read-only).

    Centres are evenly spaced in mel between ``low_freq`` and ``high_freq`` (<= 0: offset
    from Nyquist) with ``num_bins + 1`` steps; filter m rises from centre m-1 to m and falls
    to m+1, evaluated at the mel of each FFT bin's frequency (the Nyquist bin gets none).
    The arithmetic is float32 in the order Kaldi's ``MelBanks`` and torchaudio's
    ``get_mel_banks`` use (the range ends in double), so these are the references' weights,
    not a more exact variant of them (float64 weights differ by up to 1.4e-5)."""
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0.0 else high_freq
    if not (0.0 <= low_freq < nyquist and 0.0 < high <= nyquist and low_freq < high):
        raise ValueError(f"bad mel range: low_freq {low_freq}, high_freq {high_freq} "
                         f"(Nyquist {nyquist})")
    lo = 1127.0 * math.log(1.0 + low_freq / 700.0)
    delta = (1127.0 * math.log(1.0 + high / 700.0) - lo) / (num_bins + 1)
    lo32, delta32 = np.float32(lo), np.float32(delta)
    m = np.arange(num_bins, dtype=np.float32)[:, None]
    left = lo32 + m * delta32
    centre = lo32 + (m + np.float32(1.0)) * delta32
    right = lo32 + (m + np.float32(2.0)) * delta32
    fft_mel = mel(np.float32(sample_rate / padded) * np.arange(padded // 2,
                                                                dtype=np.float32))[None, :]
    up = (fft_mel - left) / (centre - left)
    down = (right - fft_mel) / (right - centre)
    banks = np.maximum(np.float32(0.0), np.minimum(up, down))
    banks.flags.writeable = False
    return banks


def window(kind: str, size: int, blackman_coeff: float = 0.42) -> np.ndarray:
    """Kaldi's analysis windows (symmetric, ``size`` points), float32."""
    n = np.arange(size, dtype=np.float64)
    a = 2.0 * math.pi / (size - 1)
    if kind in ("hanning", "povey"):
        w = 0.5 - 0.5 * np.cos(a * n)
        w = w**0.85 if kind == "povey" else w
    elif kind == "hamming":
        w = 0.54 - 0.46 * np.cos(a * n)
    elif kind == "rectangular":
        w = np.ones(size)
    elif kind == "blackman":
        w = blackman_coeff - 0.5 * np.cos(a * n) + (0.5 - blackman_coeff) * np.cos(2 * a * n)
    else:
        raise ValueError(f"unknown window_type {kind!r}; use one of {', '.join(WINDOWS)}")
    return w.astype(np.float32)


def fft_size(params: Mapping[str, Any], sample_rate: int) -> tuple[int, int]:
    """(window, FFT) sizes in samples: Kaldi's window, zero-padded to a power of two."""
    size = int(sample_rate * float(params["frame_length_ms"]) / 1000.0)
    padded = 1 << (size - 1).bit_length() if params["round_to_power_of_two"] else size
    if padded % 2:
        raise ValueError(f"the FFT size {padded} must be even (round_to_power_of_two)")
    return size, padded


def _frames(wav: np.ndarray, size: int, shift: int, snip_edges: bool) -> np.ndarray:
    """[m, size] frames (a strided view); without snip_edges the ends are mirrored (Kaldi)."""
    if not snip_edges:
        m = (len(wav) + shift // 2) // shift
        pad = size // 2 - shift // 2
        rev = wav[::-1]
        wav = np.concatenate([rev[-pad:], wav, rev]) if pad > 0 else \
            np.concatenate([wav[-pad:], rev])
    else:
        m = 1 + (len(wav) - size) // shift
    return np.lib.stride_tricks.sliding_window_view(wav, size)[: m * shift : shift]


def kaldi_fbank(waveform: Any, spec: Any = None) -> np.ndarray:
    """Raw (unpadded) log-mel fbank ``[n_frames, num_mel_bins]`` float32.

    ``waveform`` is mono float in [-1, 1], shape ``[n]`` or ``[1, n]`` (NumPy or anything
    ``np.asarray`` takes). The mean is removed first, as in the references. Audio shorter
    than one window returns 0 frames."""
    p = fbank_params(spec)
    sr = sample_rate_of(spec)
    wav = np.asarray(waveform, dtype=np.float32).reshape(-1)
    size, padded = fft_size(p, sr)
    shift = int(sr * float(p["frame_shift_ms"]) / 1000.0)
    bins = int(p["num_mel_bins"])
    width = bins + int(bool(p["use_energy"]))
    if len(wav) < size:
        return np.zeros((0, width), dtype=np.float32)
    x = _frames(wav - wav.mean(dtype=np.float32), size, shift, bool(p["snip_edges"]))
    if p["remove_dc_offset"]:
        x = x - x.mean(axis=1, keepdims=True, dtype=np.float32)
    energy = None
    if p["use_energy"] and p["raw_energy"]:
        energy = _log_energy(x, float(p["energy_floor"]))
    coeff = np.float32(p["preemphasis_coefficient"])
    if coeff != 0.0:  # x[j] -= c * x[j - 1], with x[-1] = x[0]
        x = x - coeff * np.concatenate([x[:, :1], x[:, :-1]], axis=1)
    x = x * window(str(p["window_type"]), size, float(p["blackman_coeff"]))
    if p["use_energy"] and not p["raw_energy"]:
        energy = _log_energy(x, float(p["energy_floor"]))
    spectrum = np.abs(np.fft.rfft(x, n=padded)).astype(np.float32)[:, : padded // 2]
    if p["use_power"]:
        spectrum = spectrum * spectrum
    out = spectrum @ mel_banks(bins, padded, float(sr), float(p["low_freq"]),
                               float(p["high_freq"])).T
    if p["use_log_fbank"]:
        out = np.log(np.maximum(out, EPS))
    if energy is not None:  # htk_compat puts it last, Kaldi's default first
        parts = [out, energy[:, None]] if p["htk_compat"] else [energy[:, None], out]
        out = np.concatenate(parts, axis=1)
    if p["subtract_mean"]:
        out = out - out.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def _log_energy(x: np.ndarray, floor: float) -> np.ndarray:
    energy = np.log(np.maximum(np.einsum("ij,ij->i", x, x), EPS))
    return energy if floor == 0.0 else np.maximum(energy, np.float32(math.log(floor)))


def pad_or_cut(fbank: np.ndarray, target_frames: int) -> np.ndarray:
    """Zero-pad at the end (AudioMAE/CAV-MAE ``ZeroPad2d``) or cut to ``target_frames``."""
    n = fbank.shape[0]
    if n < target_frames:
        return np.pad(fbank, ((0, target_frames - n), (0, 0)))
    return fbank[:target_frames]


def compute_fbank(waveform: Any, spec: Any = None) -> tuple[np.ndarray, int]:
    """Store-ready fbank: (float32 ``[target_frames, num_mel_bins]``, real frame count)."""
    target = int(fbank_params(spec)["target_frames"])
    raw = kaldi_fbank(waveform, spec)
    return np.ascontiguousarray(pad_or_cut(raw, target)), int(min(raw.shape[0], target))


def mel_channel_is_empty(channel: int, spec: Any = None) -> bool:
    """True when a mel channel covers no FFT bin (see module docstring: channel 3)."""
    p = fbank_params(spec)
    sr = sample_rate_of(spec)
    _, padded = fft_size(p, sr)
    banks = mel_banks(int(p["num_mel_bins"]), padded, float(sr), float(p["low_freq"]),
                      float(p["high_freq"]))
    return not banks[channel].any()


__all__ = ["compute_fbank", "fbank_params", "kaldi_fbank", "mel_banks", "pad_or_cut",
           "mel_channel_is_empty", "window"]
