"""Batch sources: how the loop, export's parity gate and evaluate read a split (docs/ARCHITECTURE.md).

A batch source serves one split as uint8 NHWC images at the model's size, with int64 labels, in a
fixed order. Today every split is an in-memory array (`ArraySource`); a source over a file index
(DataLoader workers) or a DistributedSampler shard is the same interface.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class BatchSource(Protocol):
    """One split, read in order."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(uint8 NHWC images, int64 labels) of at most `batch_size` samples, covering the split once."""
        ...


@dataclass(frozen=True)
class ArraySource:
    """A split held in memory: uint8 NHWC images and their labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consecutive slices of the arrays (views, no copies)."""
        for start in range(0, len(self), batch_size):
            yield self.images[start:start + batch_size], self.labels[start:start + batch_size]


def first_images(sources: list[BatchSource], count: int) -> np.ndarray:
    """Up to `count` images from the start of the sources, the first source first."""
    taken: list[np.ndarray] = []
    needed = count
    for source in sources:
        if needed <= 0:
            break
        batch = next(iter(source.batches(needed)), None)
        if batch is not None:
            taken.append(batch[0])
            needed -= len(batch[0])
    return np.concatenate(taken)
