"""`imagefolder:PATH`, in the layouts people have:

- split folders: PATH/train/<class>/* with PATH/test/<class>/* and PATH/val/<class>/* where they exist (the
  splits a folder lacks are carved from train, stratified, by `data.test_fraction` / `data.val_fraction`);
- one folder of class folders: PATH/<class>/* (test and val carved from it the same way; the split
  settings are recorded in the manifest, so the split never changes between runs);
- held-out folders only: PATH/test/<class>/* (and/or val/): evaluated, never trained on; its class
  folders may be any subset of the model's.
Images directly under PATH are an error naming these layouts."""

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
    """List the class folders of each split (decoding waits); `split_dirs` maps our split name to a folder. With
    a train split every split has its class folders; without one (held-out data), the classes are theirs."""
    per_split = {split: _class_files(root / folder) for split, folder in split_dirs.items()}
    if "train" not in per_split:
        classes = sorted({name for files in per_split.values() for name in files})
        return SourceData(classes=classes, splits={split: _split(root, classes, files)
                                                   for split, files in per_split.items()})
    classes = list(per_split["train"])
    for split, files in per_split.items():
        if list(files) != classes:
            extra, lacking = sorted(set(files) - set(classes)), sorted(set(classes) - set(files))
            raise DhaError(f"class folders of '{root / split_dirs[split]}' differ from train: "
                           f"extra {extra}, missing {lacking}", "use the same class folders in every split")
    return SourceData(classes=classes,
                      splits={split: _split(root, classes, files) for split, files in per_split.items()})


def _split(root: Path, classes: list[str], files: dict[str, list[Path]]) -> SourceSplit:
    """One split's files in class order, labelled by their class's index in `classes`."""
    present = [name for name in classes if name in files]
    paths = tuple(path for name in present for path in files[name])
    labels = np.array([classes.index(name) for name in present for _ in files[name]], dtype=np.int64)
    return SourceSplit(ImageFiles(paths, root), labels)


LAYOUTS = ("PATH/<class>/* (one folder of class folders), or PATH/train/<class>/* with optional PATH/test/ "
           "and PATH/val/")


def load(path: str, *, download: bool = False) -> SourceData:
    """Read an image folder in any of the module's layouts (split folders, one folder of class folders, or
    held-out folders only)."""
    root = Path(path)
    if not root.is_dir():
        raise DhaError(f"imagefolder path '{root}' is not a directory", "check the path in data.dataset")
    split_dirs = {split: split for split in ("train", "test", "val") if (root / split).is_dir()}
    if split_dirs:
        return load_split_dirs(root, split_dirs)
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise DhaError(f"imagefolder '{root}' has images directly in it ({loose[0]}, ...): a class is a folder",
                       f"lay it out as {LAYOUTS}")
    if not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        raise DhaError(f"imagefolder '{root}' has no class folders", f"lay it out as {LAYOUTS}")
    return load_split_dirs(root, {"train": "."})
