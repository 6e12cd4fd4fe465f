"""Where the training loop's batches come from: splits held on the device, or files streamed through
DataLoader workers (docs/ARCHITECTURE.md, "Data"). Either way a rank gets its share of every step's
global batch as uint8 NCHW on the device, validation reads this rank's shard of val, and the position
in the data is part of the checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch

from dha_pipeline.data.cache import FILES, PreparedData
from dha_pipeline.data.device import DeviceSplit, rank_indices
from dha_pipeline.data.stream import ProbeStream, StreamedSplit, TrainStream, auto_workers
from dha_pipeline.distributed import rank_seed
from dha_pipeline.errors import DhaError
from dha_pipeline.recipe import HELD_IN_ON_STREAMED_DATA, Recipe

Batch = tuple[torch.Tensor, torch.Tensor]


class Feed:
    """The batches of one rank: the epoch's training steps, random probe batches, and validation."""

    def __init__(self, data: PreparedData, recipe: Recipe, device: torch.device, process: int,
                 processes: int) -> None:
        self.device, self.process, self.processes, self.seed = device, process, processes, recipe.seed
        self.order_generator = torch.Generator().manual_seed(recipe.seed)  # the data order: the same on every rank
        self.streamed = data.storage == FILES
        if self.streamed:
            if recipe.hpo.estimator == "held_in" and "hpo" in recipe.search.components:
                raise DhaError(*HELD_IN_ON_STREAMED_DATA)
            local = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
            self.workers = recipe.data.workers if recipe.data.workers >= 0 else auto_workers(local)
            self.train_size = len(data.indexes["train"])
            self.sources = {split: data.source(split, self.workers, recipe.data.skip_bad) for split in ("train", "val")}
            self.val_size = len(self.sources["val"])
            self.val: Any = StreamedSplit(self.sources["val"].shard(process, processes), device)
        else:
            self.splits = {split: DeviceSplit.read(data.source(split), device) for split in ("train", "val")}
            self.train_size, self.val_size = len(self.splits["train"]), len(self.splits["val"])
            self.val = self.splits["val"].shard(process, processes)
        self.global_batch = min(recipe.train.batch_size, self.train_size)
        if self.global_batch % processes:
            raise DhaError(f"train.batch_size = {self.global_batch} does not split evenly over {processes} processes",
                           f"set train.batch_size to a multiple of {processes}")
        self.local_batch = self.global_batch // processes  # this rank's part of every step's batch
        self.steps_per_epoch = self.train_size // self.global_batch
        self.order = torch.randperm(self.train_size, generator=self.order_generator)
        if self.streamed:
            augment = recipe.augment
            self.stream = TrainStream(data.indexes["train"], data.image_size, data.channels,
                                      (augment.resized_crop_min, 1.0), augment.hflip, recipe.seed, self.local_batch,
                                      self.steps_per_epoch, self.workers, device, process, processes,
                                      recipe.data.skip_bad)
            self.probes = {split: ProbeStream(source, self.local_batch, rank_seed(recipe.seed, process) + index,
                                              device) for index, (split, source) in enumerate(self.sources.items())}

    def epoch(self, epoch: int, start_step: int) -> Iterator[Batch]:
        """This rank's (uint8 NCHW images, labels) of steps `start_step`.. of `epoch`."""
        if self.streamed:
            yield from self.stream.epoch(epoch, start_step)
            return
        order = self.order.to(self.device)
        for step in range(start_step, self.steps_per_epoch):
            yield self.splits["train"].take(rank_indices(order, step, self.global_batch, self.process,
                                                         self.processes))

    def next_epoch(self) -> None:
        """Draw the next epoch's order (in memory; a stream's order follows from its seed and the epoch)."""
        self.order = torch.randperm(self.train_size, generator=self.order_generator)

    def random_batch(self, split: str, size: int, generator: torch.Generator) -> Batch:
        """`size` random samples of `split` without the stream's crop: uint8 NCHW and labels (from this
        rank's generator in memory; from the split's probe stream when streamed)."""
        if self.streamed:
            return self.probes[split].next()
        held = self.splits[split]
        index = torch.randint(0, len(held), (min(size, len(held)),), generator=generator)
        return held.take(index.to(self.device))

    @property
    def bad_files(self) -> list[str]:
        """Unreadable files met (and skipped) while training."""
        return self.stream.bad_files if self.streamed else []

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: the epoch's order, the order's generator, the probe streams' positions."""
        return {"order": self.order, "order_rng": self.order_generator.get_state(),
                "probe_draws": {split: probe.draws for split, probe in self.probes.items()} if self.streamed else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        self.order = state["order"].cpu()
        self.order_generator.set_state(state["order_rng"].cpu())
        if self.streamed:
            for split, draws in state["probe_draws"].items():
                self.probes[split].restart(int(draws))
