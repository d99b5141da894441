"""store.fbank against independent references: torchaudio's Kaldi fbank called exactly
as AudioMAE/CAV-MAE call it (bit for bit), kaldi-native-fbank (80 bins, tolerance), and a
hand-computed HTK mel peak for pure sines that went through the real decode path."""

from __future__ import annotations

import math
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from pipeline.decode import decode_clip
from pipeline.ffmpeg_bin import ffmpeg_exe
from store import StoreSpec
from store.fbank import compute_fbank, kaldi_fbank, mel_channel_is_empty

torch.set_num_threads(1)


def reference_wav2fbank(waveform: torch.Tensor, target_length: int = 1024) -> torch.Tensor:
    """AudioMAE dataset.py / CAV-MAE dataloader.py _wav2fbank, restated."""
    waveform = waveform - waveform.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        waveform, htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    p = target_length - fbank.shape[0]
    if p > 0:
        fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank)
    elif p < 0:
        fbank = fbank[0:target_length, :]
    return fbank


@pytest.fixture(scope="module")
def speech(media_dir: Path) -> np.ndarray:
    return decode_clip(str(media_dir / "speech_two_speakers.wav"), 0.0, 12.0).audio


@pytest.mark.parametrize("seconds", [12.0, 10.0, 4.3])
def test_fbank_bit_exact_with_reference_call(speech: np.ndarray, seconds: float) -> None:
    wav = speech[: int(seconds * 16000)]
    ours, n = compute_fbank(wav, StoreSpec())
    ref = reference_wav2fbank(torch.from_numpy(wav).reshape(1, -1))
    assert ours.shape == (1024, 128) and ours.dtype == np.float32
    assert np.array_equal(ours, ref.numpy())
    assert n == min(1024, 1 + (len(wav) - 400) // 160)
    assert not ours[n:].any()  # zero padding after the real frames


def test_decoded_audio_has_the_scale_of_torchaudio_load(media_dir: Path) -> None:
    """The papers' statistics assume torchaudio.load's scale: int16 PCM / 32768 in [-1, 1)."""
    path = media_dir / "speech_two_speakers.wav"  # 16 kHz mono int16: no resampling
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    ours = decode_clip(str(path), 2.0, 7.0).audio
    assert np.array_equal(ours, pcm[32000:112000].astype(np.float32) / 32768.0)


def test_fbank_matches_kaldi_native_fbank_80_bins(speech: np.ndarray) -> None:
    knf = pytest.importorskip("kaldi_native_fbank")
    wav = speech[:160000]
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.frame_opts.samp_freq = 16000
    opts.mel_opts.num_bins = 80
    opts.use_energy = False
    opts.htk_compat = True
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, (wav - wav.mean()).tolist())
    online.input_finished()
    theirs = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    ours = kaldi_fbank(wav, {"num_mel_bins": 80}).numpy()
    assert ours.shape == theirs.shape == (998, 80)
    # float32 FFT/log differences between two implementations: stated tolerance 2e-3
    assert np.abs(ours - theirs).max() < 2e-3


def test_mel_channel_3_is_constant_as_in_the_reference(speech: np.ndarray) -> None:
    fb = kaldi_fbank(speech[:160000]).numpy()
    assert mel_channel_is_empty(3) and not mel_channel_is_empty(2)
    assert fb[:, 3].std() < 1e-5 and abs(fb[:, 3].mean() - math.log(np.finfo(np.float32).eps)) \
        < 1e-3
    assert fb[:, 4].std() > 0.1


def _htk_peak_bin(freq: float, bins: int = 128, low: float = 20.0, high: float = 8000.0) -> int:
    """Hand computation: HTK mel centres evenly spaced between mel(low) and mel(high)."""
    mel = lambda f: 1127.0 * math.log(1.0 + f / 700.0)  # noqa: E731
    delta = (mel(high) - mel(low)) / (bins + 1)
    centres = [mel(low) + (i + 1) * delta for i in range(bins)]
    return int(np.argmin([abs(c - mel(freq)) for c in centres]))


def test_ffmpeg_sine_peaks_at_the_expected_mel_bin(tmp_path: Path) -> None:
    path = tmp_path / "sine1k.wav"  # 44.1 kHz stereo: also exercises resample + downmix
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=1000:sample_rate=44100:duration=3", "-ac", "2",
                    str(path)], check=True)
    audio = decode_clip(str(path), 0.0, 10.0).audio
    assert abs(len(audio) - 48000) <= 160
    fb, n = compute_fbank(audio)
    assert int(np.argmax(fb[:n].mean(axis=0))) == _htk_peak_bin(1000.0)


def test_numpy_sine_peaks_at_the_expected_mel_bin(tmp_path: Path) -> None:
    path = tmp_path / "sine3k.wav"
    t = np.arange(48000 * 2) / 48000.0
    pcm = (0.3 * np.sin(2 * np.pi * 3000.0 * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes(pcm.tobytes())
    fb, n = compute_fbank(decode_clip(str(path), 0.0, 10.0).audio)
    assert n == 1 + (32000 - 400) // 160
    assert int(np.argmax(fb[:n].mean(axis=0))) == _htk_peak_bin(3000.0)
