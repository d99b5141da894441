"""Classification metrics from scores, as the official AST / CAV-MAE / AudioMAE code reports them.

All metrics are scikit-learn / SciPy calls on (scores [N, C], targets [N, C] multi-hot):

* ``AP[c] = sklearn.metrics.average_precision_score(targets[:, c], scores[:, c])`` for every
  class c. A class without positives in the evaluated clips has no defined AP; scikit-learn
  (>= 1.1) returns 0.0 for it with a warning, and the official code (AST, CAV-MAE
  ``utilities/stats.py``, AudioMAE ``util/stat.py``) keeps that value in its plain mean:
  ``mAP = np.mean([stat['AP'] for stat in stats])``. We report that figure as ``mAP`` (it is
  what the papers' tables hold; on the full AudioSet eval set every class has positives) and
  the mean over classes with positives as ``mAP_with_positives``, with the count of classes
  without positives.
* ``mAUC``: mean ``roc_auc_score`` over the classes where it is defined (at least one positive
  and one negative). AudioMAE's code raises on such a class; CAV-MAE's stores -1 and averages
  it in. Neither happens on AudioSet eval; here we leave undefined classes out and say how many.
* ``d_prime = sqrt(2) * scipy.stats.norm.ppf(mAUC)`` (AST / CAV-MAE ``d_prime``).
* single-label sets: ``top1`` / ``top5`` = ``sklearn.metrics.top_k_accuracy_score`` on the
  clip's one label (CAV-MAE's ``acc`` is top-1 of argmax), beside the same mAP.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn import metrics as skm


def multi_hot(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Lists of label indices -> int8 [N, C] multi-hot."""
    out = np.zeros((len(labels), num_classes), dtype=np.int8)
    for i, ls in enumerate(labels):
        out[i, list(ls)] = 1
    return out


def per_class_ap(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """average_precision_score per class; 0.0 where a class has no positives (sklearn)."""
    ap = np.zeros(scores.shape[1], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No positive class found in y_true"
        for c in range(scores.shape[1]):
            ap[c] = skm.average_precision_score(targets[:, c], scores[:, c])
    return ap


def per_class_auc(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """roc_auc_score per class; NaN where undefined (a class all positive or all negative)."""
    auc = np.full(scores.shape[1], np.nan, dtype=np.float64)
    pos = targets.sum(axis=0)
    for c in np.flatnonzero((pos > 0) & (pos < len(targets))):
        auc[c] = skm.roc_auc_score(targets[:, c], scores[:, c])
    return auc


def d_prime(auc: float) -> float:
    """sqrt(2) * Phi^-1(AUC) (AST / CAV-MAE convention)."""
    return float(math.sqrt(2.0) * norm.ppf(auc))


def classification_metrics(
    scores: np.ndarray, labels: Sequence[Sequence[int]], single_label: bool = False
) -> dict[str, Any]:
    """All metrics of the module docstring for ``scores`` [N, C] and true label lists."""
    scores = np.asarray(scores, dtype=np.float64)
    n, num_classes = scores.shape
    if n == 0:
        raise ValueError("no scored clips to compute metrics on")
    targets = multi_hot(labels, num_classes)
    ap = per_class_ap(scores, targets)
    auc = per_class_auc(scores, targets)
    has_pos = targets.sum(axis=0) > 0
    defined = ~np.isnan(auc)
    out: dict[str, Any] = {
        "mAP": float(ap.mean()),
        "mAP_with_positives": float(ap[has_pos].mean()) if has_pos.any() else float("nan"),
        "classes": int(num_classes),
        "classes_without_positives": int((~has_pos).sum()),
        "mAUC": float(auc[defined].mean()) if defined.any() else float("nan"),
        "classes_auc_undefined": int((~defined).sum()),
    }
    out["d_prime"] = d_prime(out["mAUC"]) if defined.any() else float("nan")
    if single_label:
        y = np.array([ls[0] if len(ls) else -1 for ls in labels])
        keep = y >= 0
        kw = {"labels": np.arange(num_classes)}
        out["top1"] = float(skm.top_k_accuracy_score(y[keep], scores[keep], k=1, **kw))
        out["top5"] = float(skm.top_k_accuracy_score(y[keep], scores[keep],
                                                     k=min(5, num_classes), **kw))
    out["per_class_ap"] = ap.tolist()
    out["per_class_auc"] = [None if math.isnan(v) else float(v) for v in auc]
    out["positives_per_class"] = targets.sum(axis=0).astype(int).tolist()
    return out


def is_single_label(labels: Sequence[Sequence[int]]) -> bool:
    """A set where every clip has exactly one label (VGGSound-style; top-1/top-5 apply)."""
    return len(labels) > 0 and all(len(ls) == 1 for ls in labels)
