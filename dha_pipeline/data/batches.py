"""Batch sources: how the loop, export's parity gate and evaluate read a split (docs/ARCHITECTURE.md).

A batch source serves one split as uint8 NHWC images at the model's size, with int64 labels, in a
fixed order. A split is an in-memory array (`ArraySource`) or a file index decoded by DataLoader
workers (`data.stream.FileSource`); both also serve every n-th sample (`shard`), for one rank's
part of validation or for images spread over a whole split, and say what the dataset cache stores of
them (`arrays`).
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

    def shard(self, process: int, processes: int) -> BatchSource:
        """Every `processes`-th sample from `process` on."""
        ...

    def arrays(self) -> dict[str, np.ndarray]:
        """What the dataset cache stores of the split (the cache's file kind -> array)."""
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

    def shard(self, process: int, processes: int) -> ArraySource:
        """Every `processes`-th sample from `process` on (views)."""
        return ArraySource(self.images[process::processes], self.labels[process::processes])

    def arrays(self) -> dict[str, np.ndarray]:
        """What the cache stores of the split: pixels ('x') and labels ('y')."""
        return {"x": self.images, "y": self.labels}


def spread_images(source: BatchSource, count: int) -> np.ndarray:
    """Up to `count` images spread evenly over the split (every n-th), so that a split stored in class
    order still gives every class; only the chosen images are read."""
    stride = max(1, len(source) // max(count, 1))
    return first_images([source.shard(0, stride)], count)


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
