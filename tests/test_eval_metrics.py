"""eval/metrics.py against a hand computation (NumPy re-derivation of each formula).

AP: mean over a class's positives of the precision at that positive's rank (scores have no
ties), 0 for a class without positives (scikit-learn's value, kept in the official plain
mean). AUC: the Mann-Whitney statistic. d' = sqrt(2) * Phi^-1(AUC). top-k: the label among
the k highest scores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from eval.metrics import classification_metrics, is_single_label, multi_hot


def hand_ap(scores: np.ndarray, target: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = target[order]
    if hits.sum() == 0:
        return 0.0
    ranks = np.flatnonzero(hits) + 1
    precision_at_hits = np.cumsum(hits)[ranks - 1] / ranks
    return float(precision_at_hits.mean())


def hand_auc(scores: np.ndarray, target: np.ndarray) -> float:
    pos, neg = scores[target == 1], scores[target == 0]
    return float((pos[:, None] > neg[None, :]).mean())


def random_multilabel(n: int = 60, c: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = []
    for _ in range(n):
        k = rng.integers(1, 4)
        labels.append(sorted(rng.choice(c - 3, size=k, replace=False).tolist()))  # 3 empty
    scores = rng.random((n, c))
    return scores, labels


def test_multilabel_metrics_equal_hand_computation() -> None:
    scores, labels = random_multilabel()
    m = classification_metrics(scores, labels)
    t = multi_hot(labels, scores.shape[1])
    ap = np.array([hand_ap(scores[:, c], t[:, c]) for c in range(t.shape[1])])
    has = t.sum(0) > 0
    auc = np.array([hand_auc(scores[:, c], t[:, c]) for c in np.flatnonzero(has)])
    assert m["classes_without_positives"] == 3 == int((~has).sum())
    assert m["classes_auc_undefined"] == 3
    np.testing.assert_allclose(m["per_class_ap"], ap, atol=1e-12)
    assert m["mAP"] == pytest.approx(ap.mean(), abs=1e-12)  # official: plain mean, zeros in
    assert m["mAP_with_positives"] == pytest.approx(ap[has].mean(), abs=1e-12)
    assert m["mAP"] < m["mAP_with_positives"]
    assert m["mAUC"] == pytest.approx(auc.mean(), abs=1e-12)
    assert m["d_prime"] == pytest.approx(math.sqrt(2) * norm.ppf(auc.mean()), abs=1e-12)
    assert all(m["per_class_auc"][c] is None for c in np.flatnonzero(~has))


def test_single_label_topk_equal_hand_computation() -> None:
    rng = np.random.default_rng(1)
    n, c = 80, 9
    y = rng.integers(0, c, n)
    scores = rng.random((n, c))
    scores[np.arange(n)[: n // 2], y[: n // 2]] += 0.5  # better than chance
    m = classification_metrics(scores, [[int(v)] for v in y], single_label=True)
    rank = (scores > scores[np.arange(n), y][:, None]).sum(1)  # 0 = the top score
    assert m["top1"] == pytest.approx((rank < 1).mean())
    assert m["top5"] == pytest.approx((rank < 5).mean())
    assert is_single_label([[int(v)] for v in y]) and not is_single_label([[0, 1]])


def test_perfect_and_no_positive_edge_cases() -> None:
    labels = [[0], [1], [0, 1], [1]]
    scores = multi_hot(labels, 3).astype(float) + 0.01 * np.arange(4)[:, None]
    m = classification_metrics(scores, labels)
    assert m["per_class_ap"][:2] == [1.0, 1.0] and m["per_class_ap"][2] == 0.0
    assert m["mAP"] == pytest.approx(2 / 3) and m["mAP_with_positives"] == 1.0
    # class 1 is positive in 3 of 4 clips, class 0 in 2: both AUCs defined and perfect
    assert m["mAUC"] == 1.0 and math.isinf(m["d_prime"])
    with pytest.raises(ValueError, match="no scored clips"):
        classification_metrics(np.zeros((0, 3)), [])
