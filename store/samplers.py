"""Samplers for map-style datasets: distributed shuffling and AudioSet balanced sampling.

:func:`label_weights` is the ONE place the importance-sampling weights are computed (MAViL
appendix, "Fine-tuning"): a clip's weight is sum over its labels c of w_c, with
w_c = 1000 / (count of c in the training set + 0.01). :class:`WeightedSampler` then draws
N clips per epoch with replacement (200,000 for AS-2M, Table 10 "Weighted sampling size")
from one seeded generator, and gives each rank an equal, disjoint slice of that draw.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

LABEL_WEIGHT_NUMERATOR = 1000.0  # MAViL appendix: w_c = 1000 / (sum_i c_i + eps)
LABEL_WEIGHT_EPS = 0.01
AUDIOSET_2M_EPOCH_SAMPLES = 200_000  # Table 10: weighted sampling size for AS-2M


def dist_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, else from torch.distributed, else (0, 1)."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        on = dist.is_available() and dist.is_initialized()
        rank = (dist.get_rank() if on else 0) if rank is None else rank
        world_size = (dist.get_world_size() if on else 1) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return int(rank), int(world_size)


def label_counts(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """How many clips carry each class."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for clip_labels in labels:
        for c in set(int(x) for x in clip_labels):
            counts[c] += 1
    return counts


def label_weights(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Per-clip sampling weight: sum over its labels of 1000 / (label count + 0.01).

    Clips without labels get weight 0 (never drawn). Raises if every weight is 0.
    """
    w_class = LABEL_WEIGHT_NUMERATOR / (label_counts(labels, num_classes) + LABEL_WEIGHT_EPS)
    weights = np.array(
        [
            float(w_class[sorted(set(int(x) for x in ls))].sum()) if len(ls) else 0.0
            for ls in labels
        ],
        dtype=np.float64,
    )
    if len(weights) and not weights.sum() > 0:
        raise ValueError("no clip carries a label: balanced sampling has nothing to weigh")
    return weights


class DistributedShuffleSampler(Sampler[int]):
    """Each rank gets an equal, disjoint slice of a per-epoch seeded permutation.

    The permutation is padded by wrapping to a multiple of world_size (or cut, with
    ``drop_last``) so every rank yields the same count, as DDP needs.
    """

    def __init__(
        self,
        n: int,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self.n = int(n)
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.shuffle, self.seed, self.drop_last = shuffle, int(seed), drop_last
        self.epoch = 0
        if drop_last:
            self.per_rank = self.n // self.world_size
        else:
            self.per_rank = math.ceil(self.n / self.world_size) if self.n else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        while order and len(order) < total:
            order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size])


class WeightedSampler(Sampler[int]):
    """Balanced (importance) sampling with replacement, split across ranks.

    Per epoch, one generator seeded with (seed + epoch) draws ``num_samples`` (rounded up to
    a multiple of world_size) indices with ``torch.multinomial(weights, n, replacement=True)``;
    rank r takes draws r, r + world_size, ... so ranks are disjoint slices of one draw.
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray | torch.Tensor,
        num_samples: int,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
    ) -> None:
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if self.weights.ndim != 1 or not len(self.weights):
            raise ValueError("weights must be a non-empty 1-D sequence")
        if (self.weights < 0).any() or not self.weights.sum() > 0:
            raise ValueError("weights must be non-negative with a positive sum")
        self.rank, self.world_size = dist_rank_world(rank, world_size)
        self.num_samples = int(num_samples)
        self.per_rank = math.ceil(self.num_samples / self.world_size)
        self.seed, self.epoch = int(seed), 0

    @classmethod
    def balanced(
        cls, labels: Sequence[Sequence[int]], num_classes: int, num_samples: int, **kw: Any
    ) -> WeightedSampler:
        """The MAViL / AudioMAE balanced sampler over clips with these labels."""
        return cls(label_weights(labels, num_classes), num_samples, **kw)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def draw(self) -> torch.Tensor:
        """This epoch's global draw (all ranks), int64 [per_rank * world_size]."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.per_rank * self.world_size
        return torch.multinomial(self.weights, total, replacement=True, generator=g)

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw()[self.rank :: self.world_size].tolist())
