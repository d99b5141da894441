"""MAViL trains: attention runs through fused SDPA, and tiny stage-1 / stage-2 models overfit
a handful of real clips (decoded from the shared media by tests/model_fixtures.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import real_clip_batch
from torch.utils._python_dispatch import TorchDispatchMode

from train.models import build_model

torch.set_num_threads(1)


class OpRecorder(TorchDispatchMode):
    """Records every aten op (name, output shape) that actually runs, backward included."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else ()
        self.ops.append((str(func.overloadpacket.__name__), shape))
        return out


def test_training_step_never_materialises_attention_matrices():
    """A bf16-autocast training step runs every attention as one fused SDPA kernel: no softmax
    and no matmul whose output is a [.., L, L] score matrix."""
    torch.manual_seed(0)
    model = build_model("mavil", "tiny", audio_size=(256, 128), num_frames=4, img_size=64)
    audio, video = torch.randn(2, 1, 256, 128), torch.randn(2, 4, 3, 64, 64)
    with OpRecorder() as rec:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(audio, video)
        out["loss"].backward()
    names = [n for n, _ in rec.ops]
    fused = [n for n in names if n.startswith("_scaled_dot_product") and "backward" not in n]
    # audio + video encoders run twice (view 1, intra view 2): 4 x 2 blocks; fusion 2; decoders 2
    assert len(fused) == 4 * 2 + 2 + 2, sorted(set(names))
    assert sum("_scaled_dot_product" in n and "backward" in n for n in names) == len(fused)
    assert not [n for n in names if n in ("softmax", "_softmax", "_softmax_backward_data")]
    lengths = {128 + 1, 32 + 1, 25 + 1, 6 + 1, 25 + 6 + 2}  # full / visible token counts
    for name, shape in rec.ops:
        if name in ("bmm", "baddbmm", "mm", "matmul") and len(shape) >= 2:
            assert not (shape[-1] == shape[-2] and shape[-1] in lengths), (name, shape)


def _small_clips(media_dir) -> tuple[torch.Tensor, torch.Tensor]:
    batch = real_clip_batch(str(media_dir))
    audio = batch["audio"][:, :, :256].contiguous()  # 2.56 s of fbank: 16 x 8 patches
    frames = batch["video"][:, ::2].flatten(0, 1)  # 4 frames at 1 fps, 64 x 64 pixels
    video = F.interpolate(frames, size=(64, 64), mode="bilinear", antialias=True)
    return audio, video.reshape(4, 4, 3, 64, 64)


def _train(model, audio, video, steps: int, lr: float = 3e-3) -> list[dict[str, float]]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history = []
    for _ in range(steps):
        out = model(audio, video)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append({k: out[k].item() for k in ("loss", "loss_recon", "loss_inter")})
    return history


def _mean(history, key, part):
    rows = history[:5] if part == "first" else history[-10:]
    return sum(r[key] for r in rows) / len(rows)


@pytest.mark.slow
def test_tiny_mavil_stage1_and_stage2_overfit_real_clips(media_dir):
    audio, video = _small_clips(media_dir)
    geometry = dict(audio_size=(256, 128), num_frames=4, img_size=64)
    torch.manual_seed(0)
    stage1 = build_model("mavil", "tiny", **geometry)
    h1 = _train(stage1, audio, video, 150)
    print(f"\nstage 1: loss {_mean(h1, 'loss', 'first'):.3f} -> {_mean(h1, 'loss', 'last'):.3f}")
    assert _mean(h1, "loss_recon", "last") < _mean(h1, "loss_recon", "first") / 5
    assert _mean(h1, "loss_inter", "last") < 0.75 * math.log(4)  # chance level is log(B)

    stage2 = build_model("mavil_stage2", "tiny", teacher=stage1, **geometry)
    h2 = _train(stage2, audio, video, 150)
    print(f"stage 2: loss {_mean(h2, 'loss', 'first'):.3f} -> {_mean(h2, 'loss', 'last'):.3f}")
    assert _mean(h2, "loss_recon", "last") < _mean(h2, "loss_recon", "first") / 10
