"""`imagefolder:PATH`: PATH/train/<class>/*, PATH/test/<class>/*, optional PATH/val/<class>/*."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dha_pipeline.data.images import IMAGE_SUFFIXES
from dha_pipeline.data.source import ImageFiles, SourceData, SourceSplit
from dha_pipeline.errors import DhaError


def _class_files(split_dir: Path) -> dict[str, list[Path]]:
    """Image files per class folder of one split, sorted for a fixed order."""
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DhaError(f"'{split_dir}' has no class folders", f"put images in {split_dir}/<class>/")
    files = {}
    for class_dir in classes:
        images = sorted(p for p in class_dir.rglob("*")
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise DhaError(f"class folder '{class_dir}' holds no images",
                           "add images (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ") or remove the folder")
        files[class_dir.name] = images
    return files


def load_split_dirs(root: Path, split_dirs: dict[str, str]) -> SourceData:
    """List the class folders of each split (decoding waits); `split_dirs` maps our split name to a folder."""
    per_split = {split: _class_files(root / folder) for split, folder in split_dirs.items()}
    classes = list(per_split["train"])
    for split, files in per_split.items():
        if list(files) != classes:
            extra, lacking = sorted(set(files) - set(classes)), sorted(set(classes) - set(files))
            raise DhaError(f"class folders of '{root / split_dirs[split]}' differ from train: "
                           f"extra {extra}, missing {lacking}", "use the same class folders in every split")
    splits: dict[str, SourceSplit] = {}
    for split, files in per_split.items():
        paths = tuple(path for name in classes for path in files[name])
        labels = np.array([i for i, name in enumerate(classes) for _ in files[name]], dtype=np.int64)
        splits[split] = SourceSplit(ImageFiles(paths, root), labels)
    return SourceData(classes=classes, splits=splits)


def load(path: str, *, download: bool = False) -> SourceData:
    """Read an ImageFolder tree with train/ and test/ (and optionally val/) splits."""
    root = Path(path)
    if not root.is_dir():
        raise DhaError(f"imagefolder path '{root}' is not a directory", "check the path in data.dataset")
    for required in ("train", "test"):
        if not (root / required).is_dir():
            raise DhaError(f"imagefolder '{root}' has no '{required}/' folder",
                           "lay it out as PATH/train/<class>/*, PATH/test/<class>/* (PATH/val/ optional)")
    split_dirs = {"train": "train", "test": "test"}
    if (root / "val").is_dir():
        split_dirs["val"] = "val"
    return load_split_dirs(root, split_dirs)
