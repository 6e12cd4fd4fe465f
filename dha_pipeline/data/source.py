"""The common shape every dataset source returns, and the spec-string dispatcher."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dha_pipeline.errors import DhaError
from dha_pipeline.preprocess import read_image



@dataclass(frozen=True)
class ImageFiles:
    """Image files of a split, not decoded yet: a stage decodes only the splits it needs."""

    paths: tuple[Path, ...]
    root: Path

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        return read_image(self.paths[index])

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def take(self, indices: np.ndarray) -> ImageFiles:
        """The files at `indices`, in that order."""
        return ImageFiles(tuple(self.paths[i] for i in indices), self.root)


@dataclass
class SourceSplit:
    """Raw images of one split (uint8 HW or HWC arrays of any size, or files to decode) and integer labels."""

    images: list[np.ndarray] | np.ndarray | ImageFiles
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> SourceSplit:
        """The samples at `indices`, in that order."""
        images = self.images
        if isinstance(images, np.ndarray):
            taken: list[np.ndarray] | np.ndarray | ImageFiles = images[indices]
        elif isinstance(images, ImageFiles):
            taken = images.take(indices)
        else:
            taken = [images[i] for i in indices]
        return SourceSplit(taken, self.labels[indices])


@dataclass
class SourceData:
    """A dataset as read from its source, before resizing and splitting.

    `fingerprint` is the sha256 of in-memory sources; sources of files leave it None, and the
    digest of the files' names and bytes is taken when they are decoded (unreadable files are found
    then too).
    """

    classes: list[str]
    splits: dict[str, SourceSplit]
    fingerprint: str | None = None


def array_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 over the shapes, dtypes and bytes of `arrays`."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_labels(name: str, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as int64, or an error naming the out-of-range values."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DhaError(f"{name} labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DhaError(f"{name} has labels out of range [0, {num_classes - 1}]: {sorted(set(bad.tolist()))[:10]}",
                       "make every label index a class in 'classes'")
    return labels.astype(np.int64)


def parse_spec(spec: str) -> tuple[str, str]:
    """Split 'kind:path' into (kind, path); 'digits' has no path."""
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in LOADERS:
        raise DhaError(f"unknown dataset kind '{kind}' in '{spec}'",
                       "use one of: " + ", ".join(f"{k}:PATH" if k != "digits" else k for k in LOADERS))
    if kind != "digits" and not path:
        raise DhaError(f"dataset spec '{spec}' needs a path", f"write {kind}:/path/to/data")
    return kind, path


def load_source(spec: str, *, download: bool = False) -> SourceData:
    """The dataset named by a spec string: arrays read, image files listed (decoded later, by split)."""
    kind, path = parse_spec(spec)
    return LOADERS[kind](path, download=download)


def _lazy(module: str, function: str = "load") -> Callable[..., SourceData]:
    """A loader that imports its module on first use (torchvision only when needed)."""

    def load(path: str, *, download: bool) -> SourceData:
        loader = getattr(importlib.import_module(f"dha_pipeline.data.{module}"), function)
        return loader(path, download=download)

    return load


LOADERS: dict[str, Callable[..., SourceData]] = {
    "digits": _lazy("digits"),
    "npz": _lazy("npz"),
    "imagefolder": _lazy("imagefolder"),
    "cifar10": _lazy("torchvision_sets", "load_cifar10"),
    "cifar100": _lazy("torchvision_sets", "load_cifar100"),
    "flowers102": _lazy("torchvision_sets", "load_flowers102"),
    "imagenet": _lazy("imagenet"),
}
