"""Table 10 footnote * sampling: classes repeated to 50 % of the unknown class, checked by a
hand computation and by drawing an epoch with the loader's WeightedSampler."""

from __future__ import annotations

import numpy as np
import pytest

from store.class_balance import balance_to_reference
from store.samplers import WeightedSampler


def test_weights_by_hand() -> None:
    # class 2 = unknown (100 clips), class 0: 10 clips, class 1: 70 clips (> 50: kept)
    labels = [[2]] * 100 + [[0]] * 10 + [[1]] * 70
    w, n = balance_to_reference(labels, reference=2)
    assert n == 100 + 50 + 70
    assert set(w[:100]) == {1.0} and set(w[100:110]) == {5.0} and set(w[110:]) == {1.0}


def test_epoch_shares_follow_the_targets() -> None:
    labels = [[2]] * 200 + [[0]] * 8 + [[1]] * 30
    w, n = balance_to_reference(labels, reference=2)
    draws = np.array(list(WeightedSampler(w, n * 20, rank=0, world_size=1, seed=0)))
    cls = np.array([ls[0] for ls in labels])[draws]
    share = np.bincount(cls, minlength=3) / len(cls)
    np.testing.assert_allclose(share, [100 / 400, 100 / 400, 200 / 400], atol=0.02)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="single-label"):
        balance_to_reference([[0, 1]], reference=0)
    with pytest.raises(ValueError, match="no clips"):
        balance_to_reference([[0]], reference=3)
