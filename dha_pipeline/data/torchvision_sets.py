"""`cifar10:ROOT`, `cifar100:ROOT`, `flowers102:ROOT`: torchvision datasets from a local root.

Nothing is downloaded unless the recipe sets data.download = true (or --download).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dha_pipeline.data.source import ImageFiles, SourceData, SourceSplit, array_fingerprint, check_labels
from dha_pipeline.errors import DhaError
from dha_pipeline.choices import SPLITS


def _open(factory, root: str, download: bool, **kwargs):  # type: ignore[no-untyped-def]
    name = factory.__name__
    try:
        return factory(root=root, download=download, **kwargs)
    except RuntimeError as exc:
        hint = ("check the root folder" if download
                else "check ROOT, or allow the download with --set data.download=true")
        raise DhaError(f"{name} not found or corrupted under '{root}' ({exc})", hint) from None


def _cifar(factory, root: str, download: bool) -> SourceData:  # type: ignore[no-untyped-def]
    splits = {}
    arrays = []
    classes: list[str] = []
    for split, train in (("train", True), ("test", False)):
        dataset = _open(factory, root, download, train=train)
        classes = list(dataset.classes)
        labels = check_labels(f"{factory.__name__} {split}", np.asarray(dataset.targets), len(classes))
        splits[split] = SourceSplit(np.asarray(dataset.data, dtype=np.uint8), labels)
        arrays += [splits[split].images, labels]
    return SourceData(classes=classes, splits=splits, fingerprint=array_fingerprint(*arrays))


def load_cifar10(path: str, *, download: bool = False) -> SourceData:
    """CIFAR-10 in torchvision's layout under `path`."""
    from torchvision.datasets import CIFAR10

    return _cifar(CIFAR10, path, download)


def load_cifar100(path: str, *, download: bool = False) -> SourceData:
    """CIFAR-100 in torchvision's layout under `path`."""
    from torchvision.datasets import CIFAR100

    return _cifar(CIFAR100, path, download)


def load_flowers102(path: str, *, download: bool = False) -> SourceData:
    """Oxford Flowers-102 with its official train/val/test splits."""
    from torchvision.datasets import Flowers102

    splits = {}
    num_classes = 102
    for split in SPLITS:
        dataset = _open(Flowers102, path, download, split=split)
        files = tuple(Path(f) for f in dataset._image_files)
        labels = check_labels(f"flowers102 {split}", np.asarray(dataset._labels), num_classes)
        splits[split] = SourceSplit(ImageFiles(files, Path(path)), labels)
    classes = list(getattr(Flowers102, "classes", [str(i) for i in range(num_classes)]))
    if not classes:
        raise DhaError("flowers102: torchvision gave no class names")
    return SourceData(classes=classes, splits=splits)
