"""Seeded randomness for views: one generator per sample, derived from (seed, epoch, position).

Views never touch the global RNG, so a sample's augmentation depends only on where it sits
in the epoch. That makes loaders reproducible across worker counts and lets a run resume on
exactly the next sample.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python versions)."""
    h = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def sample_generator(*parts: int) -> torch.Generator:
    """A fresh CPU generator seeded from ``parts`` (e.g. seed, epoch, position)."""
    g = torch.Generator()
    g.manual_seed(derive_seed(*parts))
    return g


def beta(a: float, b: float, g: torch.Generator) -> float:
    """Beta(a, b) drawn from a torch generator (torch.distributions takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(a, b))


def uniform(g: torch.Generator) -> float:
    """U(0, 1) from ``g``."""
    return float(torch.rand(1, generator=g))
