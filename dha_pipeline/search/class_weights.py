"""`train.class_weights = "balanced"`: each class's training loss weighted by n / (classes x n_class), from the
train split's counts (scikit-learn's "balanced" rule), so every class weighs the same in the objective while the
weights still average 1 over the training samples."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight


def balanced_class_weights(counts: list[int], device: torch.device) -> torch.Tensor:
    """One weight per class (label order) for `F.cross_entropy(weight=...)`; a class without training images
    gets weight 0 (it never appears in a training batch)."""
    counts_array = np.asarray(counts, dtype=np.int64)
    present = np.flatnonzero(counts_array)
    labels = np.repeat(np.arange(len(counts_array)), counts_array)
    weights = np.zeros(len(counts_array), dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.as_tensor(weights, device=device)
