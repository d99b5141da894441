"""Mixup for fine-tuning (Table 10: rate 0.5), done on raw log-mel in the linear domain.

The official AST / AudioMAE / CAV-MAE code mixes *waveforms*: w = lam * x + (1 - lam) * y,
with lam ~ Beta(10, 10), and mixes labels with the same lam. Our store keeps fbanks, not
waveforms, so we mix in the linear mel-power domain: for uncorrelated signals the power of
the waveform mix is lam^2 P_x + (1 - lam)^2 P_y (the cross term averages out), hence
``weights="amplitude"`` (default) uses lam^2 / (1 - lam)^2 and approximates the official
waveform mixing; ``weights="power"`` uses lam / (1 - lam). Mixing the log values directly
(as AudioMAE's fbank path does) would be a geometric mean, i.e. not a sound mixture.

This runs on raw (un-normalised) log-mel, before roll, SpecAugment and normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from store.views.rng import beta, uniform


def mix_log_mel(
    a: torch.Tensor,
    valid_a: int,
    b: torch.Tensor,
    valid_b: int,
    lam: float,
    weights: str = "amplitude",
) -> tuple[torch.Tensor, int]:
    """log(w_a * exp(a) + w_b * exp(b)) over the real frames; returns (mix, valid frames).

    ``a``, ``b``: raw log-mel [T, M] of equal T. Like the official code, b is cut or padded
    with silence to a's length; if a has no audio (valid_a == 0) the mix is b's part alone.
    """
    if weights == "amplitude":
        wa, wb = lam * lam, (1.0 - lam) ** 2
    elif weights == "power":
        wa, wb = lam, 1.0 - lam
    else:
        raise ValueError(f"weights must be 'amplitude' or 'power', not {weights!r}")
    la = math.log(wa) if wa > 0 else -math.inf
    lb = math.log(wb) if wb > 0 else -math.inf
    if valid_a <= 0:
        out = b.clone()
        out[:valid_b] = b[:valid_b] + lb
        return out, valid_b
    out = a.clone()
    both = min(valid_a, valid_b)
    out[:both] = torch.logaddexp(a[:both] + la, b[:both] + lb)
    out[both:valid_a] = a[both:valid_a] + la  # partner is silent here
    return out, valid_a


def mix_tensors(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """lam * x + (1 - lam) * y (labels, normalised video pixels)."""
    return x * lam + y * (1.0 - lam)


@dataclass
class Mixup:
    """Decides per sample whether to mix (probability ``prob``) and draws lam ~ Beta(a, a)."""

    prob: float = 0.5
    alpha: float = 10.0
    weights: str = "amplitude"
    mix_video: bool = True

    def wants_partner(self, g: torch.Generator) -> bool:
        return self.prob > 0 and uniform(g) < self.prob

    def draw_lambda(self, g: torch.Generator) -> float:
        return beta(self.alpha, self.alpha, g)
