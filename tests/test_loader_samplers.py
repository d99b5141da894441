"""Samplers: balanced-sampling weights (MAViL appendix), frequencies, rank splits."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from store.samplers import DistributedShuffleSampler, WeightedSampler, label_weights


def test_label_weights_hand_computation() -> None:
    labels = [[0], [0, 1], [2], [0, 2], []]
    # counts: class 0 -> 3 clips, class 1 -> 1, class 2 -> 2
    w = label_weights(labels, num_classes=4)
    w0, w1, w2 = 1000 / 3.01, 1000 / 1.01, 1000 / 2.01
    assert np.allclose(w, [w0, w0 + w1, w2, w0 + w2, 0.0])
    with pytest.raises(ValueError, match="no clip carries a label"):
        label_weights([[], []], 3)


def test_weights_on_real_audioset_balanced_segments(audioset_dir: Path) -> None:
    mids = {}
    with open(audioset_dir / "class_labels_indices.csv") as f:
        for row in csv.DictReader(f):
            mids[row["mid"]] = int(row["index"])
    labels = []
    with open(audioset_dir / "balanced_train_segments.csv") as f:
        for row in csv.reader(f):
            if row and row[0] != "YTID" and not row[0].startswith("#"):
                labels.append([mids[m] for m in ",".join(row[3:]).strip('" ').split(",")])
    w = label_weights(labels, 527)
    counts = Counter(c for ls in labels for c in set(ls))
    k = 123
    assert np.isclose(w[k], sum(1000 / (counts[c] + 0.01) for c in set(labels[k])))
    # all clips at once, as a matrix product: multi-hot [clips, classes] @ class weights
    hot = np.zeros((len(labels), 527))
    for i, ls in enumerate(labels):
        hot[i, ls] = 1.0
    assert np.allclose(w, hot @ (1000 / (hot.sum(0) + 0.01)))


def test_weighted_sampler_frequencies_match_weights() -> None:
    weights = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 0.5, 0.0, 7.0])
    n = 40_000
    sampler = WeightedSampler(weights, n, rank=0, world_size=1, seed=123)
    draws = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(draws) == n
    observed = np.bincount(draws, minlength=len(weights))
    assert observed[6] == 0  # weight 0: never drawn
    live = weights > 0
    expected = weights[live] / weights.sum() * n
    _, p = chisquare(observed[live], expected)
    assert p > 1e-3
    # an absurd weighting is rejected by the same test (the test can fail)
    _, p_bad = chisquare(observed[live], np.full(live.sum(), n / live.sum()))
    assert p_bad < 1e-6


def test_weighted_sampler_ranks_split_one_draw_and_epochs_differ() -> None:
    weights = np.linspace(1, 5, 50)
    ranks = [WeightedSampler(weights, 1001, rank=r, world_size=4, seed=7) for r in range(4)]
    assert all(len(s) == 251 for s in ranks)  # ceil(1001 / 4): equal counts per rank
    parts = [list(s) for s in ranks]
    assert all(len(p) == 251 for p in parts)
    whole = ranks[0].draw().tolist()
    interleaved = [parts[i % 4][i // 4] for i in range(len(whole))]
    assert interleaved == whole
    first = list(ranks[0])
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != first
    ranks[0].set_epoch(0)
    assert list(ranks[0]) == first


def test_balanced_constructor() -> None:
    labels = [[0]] * 90 + [[1]] * 10  # class 1 is 9x rarer
    s = WeightedSampler.balanced(labels, 2, 20_000, rank=0, world_size=1, seed=0)
    draws = np.array(list(s))
    share_rare = (draws >= 90).mean()
    assert abs(share_rare - 0.5) < 0.02  # balanced: both classes drawn equally


def test_distributed_shuffle_sampler_equal_disjoint_cover() -> None:
    for n, world in ((10, 4), (12, 3), (3, 4)):
        samplers = [DistributedShuffleSampler(n, r, world, seed=5) for r in range(world)]
        parts = [list(s) for s in samplers]
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) == len(samplers[0])
        seen = [i for p in parts for i in p]
        assert set(seen) == set(range(n))
        assert len(seen) - n < world  # padding only wraps the few missing
    s = DistributedShuffleSampler(10, 0, 2, seed=5)
    e0 = list(s)
    s.set_epoch(3)
    assert list(s) != e0
    dropped = [list(DistributedShuffleSampler(10, r, 4, drop_last=True)) for r in range(4)]
    assert all(len(p) == 2 for p in dropped) and len({i for p in dropped for i in p}) == 8
