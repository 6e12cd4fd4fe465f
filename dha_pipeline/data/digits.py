"""scikit-learn's bundled 8x8 handwritten digits: the embedded default dataset."""

from __future__ import annotations

import numpy as np

from dha_pipeline.data.source import SourceData, SourceSplit, array_fingerprint

DIGITS_MAX_VALUE = 16


def load(path: str, *, download: bool = False) -> SourceData:
    """All 1,797 digits as one 'train' split of 8x8 grayscale uint8 images (no val/test given)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / DIGITS_MAX_VALUE)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    return SourceData(classes=[str(c) for c in bunch.target_names],
                      splits={"train": SourceSplit(images, labels)},
                      fingerprint=array_fingerprint(images, labels))
