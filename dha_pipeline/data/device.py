"""Splits held on the training device: uint8 NCHW tensors read once from a batch source, served
by index (training) or in order (validation), and turned into model inputs on the device."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from dha_pipeline.data.batches import BatchSource
from dha_pipeline.preprocess import PIXEL_SCALE, standardize


def to_unit(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images as floats in [0, 1]."""
    return batch.float().div_(PIXEL_SCALE)


class Standardize:
    """(x - mean) / std per channel, on the device: the last step of every model input."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device) -> None:
        shape = (1, len(mean), 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(shape)

    def __call__(self, unit_batch: torch.Tensor) -> torch.Tensor:
        return standardize(unit_batch, self.mean, self.std)


class DeviceSplit:
    """A whole split as uint8 NCHW on the device (small and medium data sets)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    @classmethod
    def read(cls, source: BatchSource, device: torch.device) -> DeviceSplit:
        """The whole of `source` on `device`."""
        images, labels = next(iter(source.batches(len(source))))
        return cls(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device),
                   torch.from_numpy(np.asarray(labels)).to(device))

    def shard(self, process: int, processes: int) -> DeviceSplit:
        """Every `processes`-th sample from `process` on (a view): one rank's part of validation."""
        return DeviceSplit(self.x[process::processes], self.y[process::processes])

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels) at `index`."""
        return self.x[index], self.y[index]

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in order, `batch_size` samples at a time."""
        for start in range(0, len(self), batch_size):
            yield self.take(slice(start, start + batch_size))


def rank_indices(order: torch.Tensor, step: int, global_batch: int, process: int, processes: int) -> torch.Tensor:
    """This rank's samples of step `step`: every `processes`-th index of the step's global batch, from
    `process` on. Over an epoch each rank gets exactly what a DistributedSampler (no shuffling of its own,
    drop_last) over `order` gives it, and the ranks together see the global batch of one process."""
    start = step * global_batch
    return order[start:start + global_batch][process::processes]
