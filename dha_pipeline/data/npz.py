"""`npz:PATH`: numpy archives with x_train, y_train, x_test, y_test, classes (x_val, y_val optional)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dha_pipeline.data.source import SourceData, SourceSplit, array_fingerprint, check_labels
from dha_pipeline.errors import DhaError
from dha_pipeline.choices import SPLITS

REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes")


def _images(path: Path, key: str, array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise DhaError(f"{path}: '{key}' has dtype {array.dtype}", "store images as uint8 in [0, 255]")
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (1, 3, 4)):
        raise DhaError(f"{path}: '{key}' has shape {array.shape}",
                       "store images as NHW (grayscale) or NHWC with C in 1, 3, 4")
    return array


def load(path: str, *, download: bool = False) -> SourceData:
    """Read and check an npz archive."""
    file = Path(path)
    if not file.is_file():
        raise DhaError(f"npz file '{file}' does not exist", "check the path in data.dataset")
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DhaError(f"'{file}' is not a readable .npz archive ({type(exc).__name__})",
                       "save it with numpy.savez") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DhaError(f"'{file}' is a single .npy array, not an .npz archive", "save it with numpy.savez")
    with archive:
        keys = set(archive.files)
        missing = [k for k in REQUIRED_KEYS if k not in keys]
        if ("x_val" in keys) != ("y_val" in keys):
            missing.append("y_val" if "x_val" in keys else "x_val")
        if missing:
            raise DhaError(f"npz file '{file}' is missing keys {missing}",
                           "it needs " + ", ".join(REQUIRED_KEYS) + " (x_val/y_val optional, together)")
        classes = [str(c) for c in archive["classes"].tolist()]
        if not classes:
            raise DhaError(f"npz file '{file}': 'classes' is empty", "list one name per class")
        splits: dict[str, SourceSplit] = {}
        arrays: list[np.ndarray] = []
        for split in SPLITS:
            if f"x_{split}" not in keys:
                continue
            x = _images(file, f"x_{split}", archive[f"x_{split}"])
            y = archive[f"y_{split}"]
            if len(x) != len(y):
                raise DhaError(f"npz file '{file}': x_{split} has {len(x)} images but y_{split} has {len(y)} labels",
                               "give every image exactly one label")
            if len(x) == 0:
                raise DhaError(f"npz file '{file}': x_{split} is empty", "give every split some images")
            splits[split] = SourceSplit(x, check_labels(f"npz y_{split}", y, len(classes)))
            arrays += [x, y]
    return SourceData(classes=classes, splits=splits, fingerprint=array_fingerprint(*arrays))
