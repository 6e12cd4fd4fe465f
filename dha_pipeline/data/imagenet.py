"""`imagenet:ROOT`: ImageNet-style ROOT/train/<wnid>/* and ROOT/val/<wnid>/*.

The official val set is the held-out test split (its labels are public, the
test set's are not); our val split is carved from train.
"""

from __future__ import annotations

from pathlib import Path

from dha_pipeline.data.imagefolder import load_split_dirs
from dha_pipeline.data.source import SourceData
from dha_pipeline.errors import DhaError


def load(path: str, *, download: bool = False) -> SourceData:
    """Read ROOT/train and ROOT/val class folders."""
    root = Path(path)
    for required in ("train", "val"):
        if not (root / required).is_dir():
            raise DhaError(f"imagenet root '{root}' has no '{required}/' folder",
                           "point it at a folder with train/<wnid>/ and val/<wnid>/ class folders")
    return load_split_dirs(root, {"train": "train", "test": "val"})
