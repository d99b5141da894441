"""PNG plots for the reports (matplotlib, Agg backend; one function per figure)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_worst_ap(ap: np.ndarray, names: Sequence[str], has_pos: np.ndarray, path: Path,
                  k: int = 10) -> Path:
    """Horizontal bars: the k best and k worst classes (among those with positives)."""
    idx = np.flatnonzero(has_pos)
    order = idx[np.argsort(-ap[idx], kind="stable")]
    k = min(k, max(1, len(order) // 2)) if len(order) > 1 else 1
    best, worst = order[:k], order[-k:] if len(order) > k else order[:0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.35 * k + 1.6), sharex=True)
    for ax, sel, title, colour in ((axes[0], best, "best classes", "tab:green"),
                                   (axes[1], worst, "worst classes", "tab:red")):
        sel = list(sel)[::-1]
        ax.barh([names[i] for i in sel], [100 * ap[i] for i in sel], color=colour)
        ax.set_title(f"{title} (AP, %)")
        ax.set_xlim(0, 100)
        for y, i in enumerate(sel):
            ax.text(100 * ap[i] + 1, y, f"{100 * ap[i]:.1f}", va="center", fontsize=8)
    return _save(fig, path)


def ap_vs_frequency(ap: np.ndarray, train_counts: np.ndarray, has_pos: np.ndarray,
                    path: Path) -> Path:
    """Per-class AP against the number of training clips carrying the class (log x)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    x = np.maximum(train_counts[has_pos], 0.8)
    ax.scatter(x, 100 * ap[has_pos], s=14, alpha=0.7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training clips with the class (log scale; 0 drawn at 0.8)")
    ax.set_ylabel("AP on the evaluated split (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("per-class AP vs training frequency")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def pr_curves(scores: np.ndarray, targets: np.ndarray, ap: np.ndarray,
              names: Sequence[str], classes: Sequence[int], path: Path) -> Path:
    """Precision-recall curves (scikit-learn) of a few classes."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for c in classes:
        p, r, _ = precision_recall_curve(targets[:, c], scores[:, c])
        ax.step(r, p, where="post", label=f"{names[c]} (AP {100 * ap[c]:.1f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.03)
    ax.set_title("precision-recall, most frequent classes of the split")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def clips_1_vs_10(ap1: np.ndarray, ap10: np.ndarray, has_pos: np.ndarray, label: str,
                  path: Path) -> Path:
    """Per-class AP with 1 clip (x) and 10 clips (y); the diagonal is 'no change'."""
    fig, ax = plt.subplots(figsize=(5.5, 5.2))
    ax.scatter(100 * ap1[has_pos], 100 * ap10[has_pos], s=14, alpha=0.7)
    ax.plot([0, 100], [0, 100], color="grey", lw=1, ls="--")
    ax.set_xlabel(f"AP, 1 clip (%)  [mAP {100 * ap1.mean():.2f}]")
    ax.set_ylabel(f"AP, 10 clips (%)  [mAP {100 * ap10.mean():.2f}]")
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.set_title(f"1-clip vs 10-clip inference: {label}")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def compare_bars(names: Sequence[str], values: Sequence[float], path: Path,
                 ylabel: str = "mAP (%)") -> Path:
    """One bar per run."""
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 4.2))
    bars = ax.bar(range(len(names)), [100 * v for v in values], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    for b, v in zip(bars, values, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, 100 * v + 0.5, f"{100 * v:.2f}", ha="center",
                fontsize=8)
    ax.set_ylim(0, max(100 * max(values) * 1.15, 1.0))
    ax.set_title("runs on the same store")
    return _save(fig, path)
