"""Benchmark MAViL pre-training steps: samples/s with bf16 autocast and fused attention.

    uv run python -m train.bench_models --stage 1 --size base --batch 64
    uv run python -m train.bench_models --stage both --size tiny --batch 4   # CPU fallback

Every figure is paired with baselines measured in the same run on the same inputs: the same
bf16 step with PyTorch's unfused "math" attention backend (which builds the L x L score
matrices), and the fp32 eager step (no autocast, math attention; the issue's baseline).
``--stage 2`` times the full stage-2 step: frozen teacher forward on the complete view
(1,296 tokens at ViT-B input sizes) plus the student step. Inputs are random tensors of the
real shapes ([B,1,1024,128] audio, [B,8,3,224,224] video): this measures the model, not the
loader (see store/bench.py for that).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from train.models import build_model


def _step_fn(model: torch.nn.Module, opt: torch.optim.Optimizer, audio: torch.Tensor,
             video: torch.Tensor, device_type: str, bf16: bool = True) -> Callable[[], None]:
    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            out = model(audio, video)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    return step


def _time(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def bench_stage(stage: int, size: str, batch: int, steps: int, warmup: int,
                device: torch.device) -> dict:
    torch.manual_seed(0)
    name = "mavil" if stage == 1 else "mavil_stage2"
    model = build_model(name, size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=None)
    audio = torch.randn(batch, 1, 1024, 128, device=device)
    video = torch.randn(batch, 8, 3, 224, 224, device=device)
    result = {}
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    for label, backends, bf16 in [
        ("fused", fused, True),
        ("math", [SDPBackend.MATH], True),
        ("fp32_eager", [SDPBackend.MATH], False),  # no autocast, unfused attention
    ]:
        step = _step_fn(model, opt, audio, video, device.type, bf16)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with sdpa_kernel(backends):
            seconds = _time(step, steps, warmup, device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        result[label] = (batch / seconds, peak)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["1", "2", "both"], default="both")
    parser.add_argument(
        "--size", default=None, help="ViT size (default: base on CUDA, tiny on CPU)"
    )
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    size = args.size or ("base" if cuda else "tiny")
    batch = args.batch or (32 if cuda else 2)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        name = torch.cuda.get_device_name()
    else:
        name = "CPU"
    print(f"MAViL step benchmark: {name}, ViT-{size}, batch {batch}, bf16 autocast, AdamW")
    stages = [1, 2] if args.stage == "both" else [int(args.stage)]
    for stage in stages:
        r = bench_stage(stage, size, batch, args.steps, args.warmup, device)
        (fused, mem_f), (math, mem_m), (fp32, mem_32) = r["fused"], r["math"], r["fp32_eager"]
        what = "masked student step" if stage == 1 else "teacher (complete view) + student step"
        print(
            f"stage {stage} ({what}): {fused:8.1f} samples/s bf16 + fused SDPA (peak "
            f"{mem_f:.1f} GiB) | bf16 + math attention {math:8.1f} samples/s (peak {mem_m:.1f} "
            f"GiB) | fp32 eager {fp32:8.1f} samples/s (peak {mem_32:.1f} GiB) | fused vs math "
            f"{fused / math:.2f}x, bf16 + SDPA vs fp32 eager {fused / fp32:.2f}x"
        )


if __name__ == "__main__":
    main()
