"""Where the training loop's batches come from: one protocol, one implementation per storage mode.

A `TrainingSource` serves one rank: its share of every step's global batch (a pure function of the
epoch and the step, so a resumed run reads the very batches an uninterrupted one did), random batches
of a split (the hyper-steps' probes), its shard of val, and its position for the checkpoint. It also
states what it supports and does to the images: `check_recipe` refuses the settings it cannot serve
(one error with the fix), and `flips` says whether its images were flipped already (the base
augmentation then does not flip again).

- `DeviceTraining` (data/device.py): the splits held on the device as uint8, batches by index.
- `StreamTraining` (data/stream.py): files decoded and cropped by DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from dha_pipeline.data.cache import FILES, PreparedData
from dha_pipeline.errors import DhaError
from dha_pipeline.recipe import Recipe, Storage

Batch = tuple[torch.Tensor, torch.Tensor]
"""uint8 NCHW images on the training device, and their int64 labels."""


@dataclass(frozen=True)
class BatchPlan:
    """How one step's global batch splits over the processes, and how many steps an epoch has."""

    global_batch: int
    local_batch: int
    steps_per_epoch: int

    @classmethod
    def of(cls, batch_size: int, train_size: int, processes: int) -> BatchPlan:
        """The plan for `train.batch_size` (at most the train split) over `processes` ranks."""
        global_batch = min(batch_size, train_size)
        if global_batch % processes:
            raise DhaError(f"train.batch_size = {global_batch} does not split evenly over {processes} processes",
                           f"set train.batch_size to a multiple of {processes}")
        return cls(global_batch, global_batch // processes, train_size // global_batch)


class TrainingSource(Protocol):
    """The batches of one rank (see the module docstring)."""

    plan: BatchPlan
    flips: bool
    """True when the source's images come flipped at random already (the base augmentation then does not flip)."""
    val_size: int
    """Images in the whole val split (all ranks)."""

    @staticmethod
    def check_recipe(recipe: Recipe) -> None:
        """Raise one user error when the recipe asks for what this storage mode cannot serve."""
        ...

    def epoch(self, epoch: int, start_step: int) -> Iterator[Batch]:
        """This rank's batches of steps `start_step`.. of `epoch`."""
        ...

    def random_batch(self, split: str, size: int, generator: torch.Generator) -> Batch:
        """`size` random samples of `split` (train or val) without a training crop."""
        ...

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """This rank's shard of val, in order."""
        ...

    @property
    def bad_files(self) -> list[str]:
        """Unreadable files met (and skipped) while training."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: the source's position beyond (epoch, step)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        ...


def source_class(storage: Storage | str) -> type[TrainingSource]:
    """The training source of a storage mode ('files' streams; anything else is held on the device)."""
    if storage == FILES:
        from dha_pipeline.data.stream import StreamTraining

        return StreamTraining
    from dha_pipeline.data.device import DeviceTraining

    return DeviceTraining


def training_source(data: PreparedData, recipe: Recipe, device: torch.device, process: int,
                    processes: int) -> TrainingSource:
    """The training source of the prepared data's storage mode, for rank `process` of `processes`."""
    kind = source_class(data.storage)
    kind.check_recipe(recipe)
    return kind(data, recipe, device, process, processes)  # type: ignore[call-arg]
