"""Label views: multi-hot over the vocabulary (multi-label, e.g. AudioSet) or a class index
(single-label, e.g. VGGSound with CE). ``num_classes=None`` means "the size of the store's
vocabulary": the dataset fills it in when it opens the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# CrossEntropyLoss's default ignore_index: a single-label clip without any label is ignored.
NO_LABEL = -100


@dataclass
class LabelView:
    num_classes: int | None = None
    multi_label: bool = True

    def __call__(self, labels: Sequence[int]) -> torch.Tensor:
        if self.num_classes is None:
            raise ValueError("this label view has no num_classes yet: build the dataset over "
                             "the store (it takes the vocabulary size) or pass num_classes")
        labels = [int(x) for x in labels]
        bad = [x for x in labels if not 0 <= x < self.num_classes]
        if bad:
            raise ValueError(f"label ids {bad} outside the vocabulary of {self.num_classes}")
        if self.multi_label:
            out = torch.zeros(self.num_classes, dtype=torch.float32)
            out[labels] = 1.0
            return out
        return torch.tensor(labels[0] if labels else NO_LABEL, dtype=torch.int64)

    def soft(self, labels: Sequence[int]) -> torch.Tensor:
        """Multi-hot float32 even for single-label vocabularies (what mixup needs)."""
        return LabelView(self.num_classes, True)(labels)
