"""MAViL Table 10, footnote * (Speech Commands fine-tuning): "We repeat and balance each
class to 50 % of the size of the unknown class."

For single-label clips with class counts n_c and a reference class r (``_unknown_``), every
other class is repeated up to ``fraction * n_r`` draws per epoch (a class already larger
keeps its size), the reference keeps n_r. A clip of class c then has sampling weight
``target_c / n_c`` and an epoch is ``sum_c target_c`` draws with replacement
(:class:`store.samplers.WeightedSampler`), so each class's expected share of an epoch is
``target_c / sum target``. On SPC-1's training split (about 32.5k unknown clips, ~1.85k per
command word) that is ~16k draws per word and per ``_silence_``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def balance_to_reference(labels: Sequence[Sequence[int]], reference: int,
                         fraction: float = 0.5) -> tuple[np.ndarray, int]:
    """(per-clip weights, draws per epoch) for the footnote's sampling; ``labels`` are the
    clips' label lists (single-label: the first one counts)."""
    if not labels or any(len(ls) != 1 for ls in labels):
        raise ValueError("balance_to_reference needs single-label clips (one label each)")
    classes = [int(ls[0]) for ls in labels]
    counts = Counter(classes)
    if reference not in counts:
        raise ValueError(f"reference class {reference} has no clips in this split")
    floor = fraction * counts[reference]
    target = {c: float(n) if c == reference else max(float(n), floor)
              for c, n in counts.items()}
    weights = np.array([target[c] / counts[c] for c in classes], dtype=np.float64)
    return weights, int(round(sum(target.values())))
