"""Splits held on the training device: uint8 NCHW tensors read once from a batch source, served
by index (training) or in order (validation), and turned into model inputs on the device;
`DeviceTraining` is the training source of data held in memory (data/training.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from dha_pipeline.data.batches import BatchSource
from dha_pipeline.data.cache import PreparedData
from dha_pipeline.data.training import Batch, BatchPlan
from dha_pipeline.preprocess import PIXEL_SCALE, standardize
from dha_pipeline.recipe import Recipe


def to_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images (what sources and decoders give) as contiguous NCHW (what networks take)."""
    return images.permute(0, 3, 1, 2).contiguous()


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
        return cls(to_nchw(torch.from_numpy(np.asarray(images))).to(device),
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


class DeviceTraining:
    """The training source of data held in memory: train and val as uint8 on the device. Epoch e reads
    the (e + 1)-th permutation drawn from a generator seeded with the recipe's seed (the same on every
    rank); a step takes its global batch's indices, rank r every `processes`-th from r on."""

    flips = False

    def __init__(self, data: PreparedData, recipe: Recipe, device: torch.device, process: int,
                 processes: int) -> None:
        self.device, self.process, self.processes, self.seed = device, process, processes, recipe.seed
        self.splits = {split: DeviceSplit.read(data.sources[split], device) for split in ("train", "val")}
        self.train = self.splits["train"]
        self.val, self.val_size = self.splits["val"].shard(process, processes), len(self.splits["val"])
        self.plan = BatchPlan.of(recipe.train.batch_size, len(self.train), processes)
        self.order_epoch = -1
        self.order_generator = torch.Generator()

    @staticmethod
    def check_recipe(recipe: Recipe) -> None:
        """Every setting is served: random batches of any split come from the device tensors."""

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of `epoch` (drawn on from the last one asked for; from the seed when going back)."""
        if epoch < self.order_epoch or self.order_epoch < 0:
            self.order_generator.manual_seed(self.seed)
            self.order_epoch = -1
        while self.order_epoch < epoch:
            self.current_order = torch.randperm(len(self.train), generator=self.order_generator)
            self.order_epoch += 1
        return self.current_order

    def epoch(self, epoch: int, start_step: int) -> Iterator[Batch]:
        """This rank's (uint8 NCHW images, labels) of steps `start_step`.. of `epoch`."""
        order = self.order(epoch).to(self.device)
        plan = self.plan
        for step in range(start_step, plan.steps_per_epoch):
            yield self.train.take(rank_indices(order, step, plan.global_batch, self.process, self.processes))

    def random_batch(self, split: str, size: int, generator: torch.Generator) -> Batch:
        """`size` random samples of the whole `split`, drawn with this rank's `generator`."""
        held = self.splits[split]
        index = torch.randint(0, len(held), (min(size, len(held)),), generator=generator)
        return held.take(index.to(self.device))

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """This rank's shard of val, in order."""
        return self.val.batches(batch_size)

    @property
    def bad_files(self) -> list[str]:
        """None: the pixels were decoded at prepare."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the order of every epoch follows from the seed."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore."""
