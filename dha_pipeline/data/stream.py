"""Data that streams from files: a file index instead of pixels, read by DataLoader worker processes.

For image sets too large to hold (`data.storage = "files"`, or "auto" over `data.memory_limit_mb`),
prepare writes an index (relative paths, labels, image sizes) and a few thousand images' channel
statistics; training reads batches through `torch.utils.data.DataLoader` workers that decode and
take an ImageNet-style random resized crop and flip on uint8 at the recipe's size; evaluation
decodes with Pillow and resizes the shorter side then takes the center crop (`prepare_image` with
`data.eval_crop`), exactly as `dha predict` does. The index is numpy arrays, not Python objects,
so forked workers share it without copying it page by page.

The order of an epoch is a `DistributedSampler`'s (seed, `set_epoch`), so a rank reads its shard;
the random crop of a sample is a pure function of (seed, epoch, sample), so a run resumed mid-epoch
reads exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from dha_pipeline.data.cache import PreparedData
from dha_pipeline.data.device import to_nchw
from dha_pipeline.data.training import Batch, BatchPlan
from dha_pipeline.distributed import rank_seed
from dha_pipeline.errors import DhaError
from dha_pipeline.preprocess import decode_image, prepare_image, to_channels
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import Recipe

TORCHVISION_DECODES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
RRC_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class FileIndex:
    """One split of an image folder: paths relative to `root` (utf-8 bytes), labels, (width, height)."""

    root: Path
    files: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> Path:
        """The file of sample `index`."""
        return self.root / self.files[index].decode()

    def arrays(self) -> dict[str, np.ndarray]:
        """What the cache stores of the index."""
        return {"files": self.files, "y": self.labels, "sizes": self.sizes}


def index_files(paths: tuple[Path, ...], labels: np.ndarray, root: Path, *, skip_bad: bool, description: str
                ) -> tuple[FileIndex, list[str]]:
    """The index of `paths`: each file's header is read (size, format), its pixels are not. Files whose
    header cannot be read raise one error naming them, or are dropped and returned when `skip_bad`."""
    from dha_pipeline.data.images import unreadable_images

    sizes = np.zeros((len(paths), 2), dtype=np.int32)
    kept = np.zeros(len(paths), dtype=bool)
    bad: list[str] = []
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(paths))
        for position, path in enumerate(paths):
            try:
                with Image.open(path) as image:
                    sizes[position] = image.size
                kept[position] = True
            except (OSError, ValueError, SyntaxError):
                bad.append(str(path))
            progress.advance(task)
    if bad and not skip_bad:
        raise unreadable_images(bad)
    relative = np.array([str(path.relative_to(root)).encode() for path, keep in zip(paths, kept, strict=True)
                         if keep], dtype=bytes)
    return FileIndex(root, relative, labels[kept], sizes[kept]), bad


def auto_workers(processes: int = 1) -> int:
    """DataLoader workers per process when `data.workers` is -1: the CPU cores shared out, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) // max(processes, 1)))


def sample_statistics(index: FileIndex, config: Any) -> tuple[int, list[float], list[float]]:
    """(channels, mean, std) of the train split measured on `config.stats_images` images drawn with the
    split seed, decoded and cropped as evaluation sees them. Channels 'auto' become 3 when any sampled
    image has colour."""
    generator = np.random.default_rng(config.split_seed)
    count = min(config.stats_images, len(index))
    chosen = np.sort(generator.choice(len(index), size=count, replace=False))
    sample = FileIndex(index.root, index.files[chosen], index.labels[chosen], index.sizes[chosen])
    channels = int(config.channels) if config.channels != "auto" else _sampled_channels(sample)
    source = FileSource(sample, config.image_size, channels, config.eval_crop,
                        auto_workers() if config.workers < 0 else config.workers, skip_bad=True)
    total = np.zeros((2, channels))
    pixels = 0
    with progress_bar() as progress:
        task = progress.add_task("channel statistics", total=count)
        for images, _ in source.batches(64):
            unit = images.reshape(-1, channels).astype(np.float64) / 255.0
            total += (unit.sum(0), (unit * unit).sum(0))
            pixels += len(unit)
            progress.advance(task, len(images))
    mean = total[0] / max(pixels, 1)
    std = np.sqrt(np.maximum(total[1] / max(pixels, 1) - mean * mean, 1e-12))
    return channels, [float(v) for v in mean], [float(max(v, 1e-3)) for v in std]


def _sampled_channels(sample: FileIndex, looks: int = 64) -> int:
    """3 when any of the first `looks` sampled images has colour (Pillow mode other than L/1/I), else 1."""
    for position in range(min(looks, len(sample))):
        try:
            with Image.open(sample.path(position)) as image:
                if image.mode not in ("1", "L", "LA", "I", "I;16", "F"):
                    return 3
        except (OSError, ValueError, SyntaxError):
            continue
    return 1


def draw_seed(seed: int, epoch: int, sample: int) -> int:
    """The seed of one sample's random crop in one epoch (independent of rank, worker and batch)."""
    return (seed * 1_000_003 + epoch * 7_919 + sample * 104_729 + 1) % (2**63 - 1)


def decode_for_training(path: Path, channels: int) -> torch.Tensor:
    """uint8 CHW pixels of an image file: torchvision's decoders (libjpeg-turbo, libpng, libwebp) where
    they read the format, Pillow otherwise."""
    from torchvision.io import ImageReadMode, decode_image as tv_decode, read_file

    if path.suffix.lower() in TORCHVISION_DECODES:
        try:
            mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
            return tv_decode(read_file(str(path)), mode=mode)
        except RuntimeError:
            pass  # some files torchvision refuses, Pillow reads (CMYK JPEGs, odd PNGs)
    pixels = to_channels(decode_image(path.read_bytes(), str(path)), channels)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


class TrainImages(Dataset):
    """Training samples: decode, random resized crop to `size`, optional horizontal flip; uint8 CHW.
    An item is (sample, seed); an unreadable file gives an empty image and its path, never an exception."""

    def __init__(self, index: FileIndex, size: int, channels: int, scale: tuple[float, float], hflip: bool) -> None:
        self.index, self.size, self.channels, self.scale, self.hflip = index, size, channels, scale, hflip

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int, str | None]:
        from torchvision.transforms import RandomResizedCrop
        from torchvision.transforms.v2 import functional as TF

        sample, seed = item
        path = self.index.path(sample)
        try:
            image = decode_for_training(path, self.channels)
        except (OSError, RuntimeError, DhaError):
            return torch.zeros((self.channels, self.size, self.size), dtype=torch.uint8), -1, str(path)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            top, left, height, width = RandomResizedCrop.get_params(image, list(self.scale), list(RRC_RATIO))
            flip = self.hflip and bool(torch.rand(()) < 0.5)
        crop = TF.resized_crop(image, top, left, height, width, [self.size, self.size], antialias=True)
        return (TF.horizontal_flip(crop) if flip else crop).contiguous(), int(self.index.labels[sample]), None


class EvalImages(Dataset):
    """Evaluation samples as deployment sees them: Pillow decode, shorter side to size / crop, center
    crop (`prepare_image`); uint8 HWC. An unreadable file gives an empty image and its path."""

    def __init__(self, index: FileIndex, size: int, channels: int, crop: float) -> None:
        self.index, self.size, self.channels, self.crop = index, size, channels, crop

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, sample: int) -> tuple[np.ndarray, int, str | None]:
        path = self.index.path(sample)
        try:
            pixels = prepare_image(decode_image(path.read_bytes(), str(path)), self.size, self.channels, self.crop)
        except (OSError, DhaError):
            return np.zeros((self.size, self.size, self.channels), dtype=np.uint8), -1, str(path)
        return pixels, int(self.index.labels[sample]), None


def _collate(items: list[tuple[Any, int, str | None]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A batch of the readable samples, and the paths of the unreadable ones."""
    good = [(pixels, label) for pixels, label, bad in items if bad is None]
    bad = [path for _, _, path in items if path is not None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), bad
    pixels = [torch.from_numpy(np.array(p)) if isinstance(p, np.ndarray) else p for p, _ in good]
    return torch.stack(pixels), torch.tensor([label for _, label in good], dtype=torch.int64), bad


class EpochSampler(Sampler):
    """This rank's samples of one epoch in a DistributedSampler's order (seed, `set_epoch`; the whole
    epoch when one process), from step `start_step` on, each paired with the seed of its random crop.
    `set_position` moves it to another epoch and step, so one DataLoader (and its workers) serves them all."""

    def __init__(self, length: int, local_batch: int, steps: int, seed: int, process: int, processes: int) -> None:
        self.shard = DistributedSampler(range(length), num_replicas=processes, rank=process, shuffle=True,
                                        seed=seed, drop_last=True)
        self.seed, self.local_batch, self.steps = seed, local_batch, steps
        self.set_position(0, 0)

    def set_position(self, epoch: int, start_step: int) -> None:
        """Serve steps `start_step`.. of `epoch` from the next `iter()` on."""
        self.shard.set_epoch(epoch)
        self.epoch = epoch
        self.begin, self.end = start_step * self.local_batch, self.steps * self.local_batch

    def __len__(self) -> int:
        return max(self.end - self.begin, 0)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        samples = list(self.shard)[self.begin:self.end]
        return iter([(sample, draw_seed(self.seed, self.epoch, sample)) for sample in samples])


def worker_context() -> Any:
    """How DataLoader workers start: from a fork server that imported torch and this module once, not
    forked from the training process. A worker forked from the trainer shares its heap copy-on-write and
    ends up holding a private copy of every page the trainer later rewrites (activations, optimizer
    state): hundreds of MB per worker (bench/stream_memory.py). 'spawn' where there is no fork server."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["torch", __name__])
        return context
    return multiprocessing.get_context("spawn")


def worker_batches(batches: Any) -> Iterator[Any]:
    """The batches of a DataLoader, with a worker that died (killed for memory, crashed in a decoder)
    turned into one clear error instead of a traceback. The loaders set no `timeout`: without one, the
    DataLoader checks its workers' liveness every few seconds and reports a dead one at once, while a
    timeout delays that report by the whole timeout. A bad file never stalls a worker: decoding errors
    are caught per file (`TrainImages`, `EvalImages`)."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as error:
            if "DataLoader" not in str(error):
                raise
            raise DhaError(f"reading images failed: {str(error).splitlines()[0]}",
                           "if memory ran out, lower data.workers or train.batch_size; continue with --resume"
                           ) from None
        yield batch


def loader(dataset: Dataset, sampler: Any, batch_size: int, workers: int, device: torch.device, *,
           persistent: bool = False) -> DataLoader:
    """A DataLoader with this project's settings: worker processes from the fork server, pinned memory on
    CUDA, prefetch, and a collate that sets unreadable files aside."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=_collate, pin_memory=device.type == "cuda", drop_last=False,
                      prefetch_factor=4 if workers else None,
                      persistent_workers=persistent and workers > 0,
                      multiprocessing_context=worker_context() if workers else None)


@dataclass
class FileSource:
    """A split read from files in order (the BatchSource of evaluation and export's parity images): uint8
    NHWC at the model's size, through DataLoader workers. Unreadable files stop it with their path."""

    index: FileIndex
    size: int
    channels: int
    crop: float
    workers: int = 0
    skip_bad: bool = False

    def __len__(self) -> int:
        return len(self.index)

    def arrays(self) -> dict[str, np.ndarray]:
        """What the cache stores of the split: its file index."""
        return self.index.arrays()

    def images(self) -> EvalImages:
        """The split's samples as evaluation views them (the dataset its loaders read)."""
        return EvalImages(self.index, self.size, self.channels, self.crop)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(uint8 NHWC, int64 labels) batches covering the split once, in index order (unreadable files
        stop it with their paths, or are left out when `skip_bad`)."""
        for pixels, labels in self.tensors(batch_size, torch.device("cpu")):
            yield pixels.numpy(), labels.numpy()

    def tensors(self, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The same batches as uint8 NHWC tensors (pinned when `device` is CUDA)."""
        from dha_pipeline.data.images import unreadable_images

        for pixels, labels, bad in worker_batches(loader(self.images(), None, batch_size, self.workers, device)):
            if bad and not self.skip_bad:
                raise unreadable_images(bad)
            if len(labels):
                yield pixels, labels

    def shard(self, process: int, processes: int) -> FileSource:
        """Every `processes`-th file from `process` on: one rank's part of validation."""
        index = self.index
        part = FileIndex(index.root, index.files[process::processes], index.labels[process::processes],
                         index.sizes[process::processes])
        return FileSource(part, self.size, self.channels, self.crop, self.workers, self.skip_bad)


class TrainStream:
    """The training batches of one rank, epoch by epoch: uint8 NCHW on the device, decoded and cropped in
    `workers` processes, `local_batch` samples a step, from any step of any epoch (resume)."""

    def __init__(self, index: FileIndex, size: int, channels: int, scale: tuple[float, float], hflip: bool,
                 seed: int, local_batch: int, steps: int, workers: int, device: torch.device,
                 process: int, processes: int, skip_bad: bool) -> None:
        images = TrainImages(index, size, channels, scale, hflip)
        self.sampler = EpochSampler(len(images), local_batch, steps, seed, process, processes)
        self.loader = loader(images, self.sampler, local_batch, workers, device, persistent=True)
        self.device, self.skip_bad = device, skip_bad
        self.bad_files: list[str] = []

    def epoch(self, epoch: int, start_step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of steps `start_step`.. of `epoch` (the same workers serve every epoch)."""
        self.sampler.set_position(epoch, start_step)
        for pixels, labels, bad in worker_batches(self.loader):
            if bad:
                self.bad_files += bad
                if not self.skip_bad:
                    raise DhaError(f"unreadable image '{bad[0]}' met while training",
                                   "fix or remove it, or set data.skip_bad = true to skip such files with a report")
            if not len(labels):
                raise DhaError(f"every image of a training batch was unreadable ({', '.join(bad[:3])} ...)",
                               "check the image files")
            yield pixels.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


class StepBatches(Sampler):
    """Endless batches of random sample indices, batch k drawn from its own seed: a probe stream that can
    restart at any k (resume)."""

    def __init__(self, length: int, batch: int, seed: int, start: int) -> None:
        self.length, self.batch, self.seed, self.start = length, batch, seed, start

    def __iter__(self) -> Iterator[list[int]]:
        draw = self.start
        while True:
            generator = torch.Generator().manual_seed(draw_seed(self.seed, draw, 0))
            yield torch.randint(self.length, (self.batch,), generator=generator).tolist()
            draw += 1


class ProbeStream:
    """Random clean batches of a split (what p's hypergradient is measured on), uint8 NCHW on the device,
    read ahead by one worker; `draws` is its position, kept in checkpoints."""

    def __init__(self, source: FileSource, batch: int, seed: int, device: torch.device) -> None:
        self.source, self.batch, self.seed, self.device = source, min(batch, len(source)), seed, device
        self.draws = 0
        self._iterator: Iterator[Any] | None = None

    def restart(self, draws: int) -> None:
        """Continue from batch `draws` (after a resume)."""
        self.draws, self._iterator = draws, None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch."""
        from dha_pipeline.data.images import unreadable_images

        if self._iterator is None:
            sampler = StepBatches(len(self.source), self.batch, self.seed, self.draws)
            self._iterator = worker_batches(DataLoader(
                self.source.images(), batch_sampler=sampler, num_workers=1, collate_fn=_collate,
                pin_memory=self.device.type == "cuda",
                multiprocessing_context=worker_context()))
        pixels, labels, bad = next(self._iterator)
        self.draws += 1
        if bad and not self.source.skip_bad:
            raise unreadable_images(bad)
        return to_nchw(pixels.to(self.device, non_blocking=True)), labels.to(self.device, non_blocking=True)


class StreamedSplit:
    """A split read from files in order for validation, as uint8 NCHW on the device (the streamed
    counterpart of `DeviceSplit.batches`)."""

    def __init__(self, source: FileSource, device: torch.device) -> None:
        self.source, self.device = source, device

    def __len__(self) -> int:
        return len(self.source)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 NCHW, labels) on the device."""
        for pixels, labels in self.source.tensors(batch_size, self.device):
            yield to_nchw(pixels.to(self.device, non_blocking=True)), labels.to(self.device, non_blocking=True)


def file_source(data: PreparedData, split: str) -> FileSource:
    """The streamed split `split` of prepared data (a file index, not pixels)."""
    source = data.sources[split]
    if not isinstance(source, FileSource):
        raise TypeError(f"split '{split}' is held in memory, not streamed")
    return source


class StreamTraining:
    """The training source of streamed data (data/training.py): each rank reads its DistributedSampler shard
    of the train files through one persistent DataLoader (decode, random resized crop, flip in the workers),
    validates on every `processes`-th val file, and draws probe batches from one worker per split."""

    flips = True

    def __init__(self, data: PreparedData, recipe: Recipe, device: torch.device, process: int,
                 processes: int) -> None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
        workers = recipe.data.workers if recipe.data.workers >= 0 else auto_workers(local)
        sources = {split: replace(file_source(data, split), workers=workers, skip_bad=recipe.data.skip_bad)
                   for split in ("train", "val")}
        self.plan = BatchPlan.of(recipe.train.batch_size, len(sources["train"]), processes)
        self.val, self.val_size = StreamedSplit(sources["val"].shard(process, processes), device), len(sources["val"])
        augment = recipe.augment
        self.stream = TrainStream(sources["train"].index, data.image_size, data.channels,
                                  (augment.resized_crop_min, 1.0), augment.hflip, recipe.seed, self.plan.local_batch,
                                  self.plan.steps_per_epoch, workers, device, process, processes, recipe.data.skip_bad)
        self.probes = {split: ProbeStream(source, self.plan.local_batch, rank_seed(recipe.seed, process) + index,
                                          device) for index, (split, source) in enumerate(sources.items())}

    @staticmethod
    def check_recipe(recipe: Recipe) -> None:
        """The `held_in` hypergradient estimator needs a random base-augmented training batch at every step; a
        stream serves its training files in its sampler's order, and its probe batches (one worker, no crop)
        are for p's occasional hyper-steps: refused with the fix."""
        if recipe.hpo.estimator == "held_in" and "hpo" in recipe.search.components:
            raise DhaError("hpo.estimator = 'held_in' draws a random training batch at every step, which streamed "
                           "data (data.storage = 'files', or 'auto' over data.memory_limit_mb) does not serve",
                           "use hpo.estimator = 'next_batch'")

    def epoch(self, epoch: int, start_step: int) -> Iterator[Batch]:
        """This rank's (uint8 NCHW images, labels) of steps `start_step`.. of `epoch`."""
        return self.stream.epoch(epoch, start_step)

    def random_batch(self, split: str, size: int, generator: torch.Generator) -> Batch:
        """The next batch of the split's probe stream (its own seeds; `size` is the local batch it was made
        with, and `generator` is not drawn from)."""
        return self.probes[split].next()

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        """This rank's shard of val, in order."""
        return self.val.batches(batch_size)

    @property
    def bad_files(self) -> list[str]:
        """Unreadable training files met (and skipped, with data.skip_bad)."""
        return self.stream.bad_files

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: how many batches each probe stream has served."""
        return {"probe_draws": {split: probe.draws for split, probe in self.probes.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        for split, draws in state["probe_draws"].items():
            self.probes[split].restart(int(draws))
