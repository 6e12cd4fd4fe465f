"""The verified dataset cache: fixed splits of uint8 images, channel statistics, a manifest.

`build_dataset` turns a source into model-ready uint8 NHWC arrays with fixed
train/val/test splits; `save_cache` writes them (atomically) with a manifest of
counts and sha256 sums; `load_cache` reads them back and verifies the sums.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.data.source import SPLITS, SourceData, SourceSplit, load_source
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import sha256_file, write_json, write_with
from dha_pipeline.preprocess import PIXEL_SCALE, RESIZE_FILTER, prepare_image
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import DataConfig

MANIFEST = "manifest.json"
CACHE_FORMAT = 1


@dataclass
class PreparedData:
    """Model-ready splits: x uint8 NHWC at the recipe's size, y int64 labels."""

    classes: list[str]
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    mean: list[float]
    std: list[float]
    manifest: dict[str, Any]

    @property
    def channels(self) -> int:
        """Number of image channels (1 or 3)."""
        return int(self.x["train"].shape[3])

    @property
    def image_size(self) -> int:
        """Side of the square images."""
        return int(self.x["train"].shape[1])


def _target_channels(config: DataConfig, source: SourceData) -> int:
    if config.channels != "auto":
        return int(config.channels)
    for split in source.splits.values():
        images = split.images
        if isinstance(images, np.ndarray):
            if images.ndim == 4 and images.shape[3] >= 3:
                return 3
        elif any(image.ndim == 3 and image.shape[2] >= 3 for image in images):
            return 3
    return 1


def _to_grid(split: SourceSplit, size: int, channels: int, description: str) -> np.ndarray:
    """Resize and convert every image of a split to uint8 NHWC (vectorized when nothing changes)."""
    images = split.images
    if isinstance(images, np.ndarray):
        array = images if images.ndim == 4 else images[:, :, :, None]
        if array.shape[1:] == (size, size, channels):
            return np.ascontiguousarray(array)
    out = np.empty((len(images), size, size, channels), dtype=np.uint8)
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(images))
        for index, image in enumerate(images):
            out[index] = prepare_image(image, size, channels)
            progress.advance(task)
    return out


def _stratified_split(labels: np.ndarray, held_out: float | int, seed: int, what: str
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): a fraction (float) or a count (int) of each class held out, fixed by `seed`."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    try:
        kept, held = train_test_split(indices, test_size=held_out, random_state=seed, stratify=labels)
    except ValueError as exc:
        raise DhaError(f"cannot split off a stratified {what} split ({exc})",
                       f"add images to small classes or change data.{what}_fraction") from None
    return np.sort(kept), np.sort(held)


def _channel_stats(train: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of train pixels scaled to [0, 1]."""
    pixels = train.reshape(-1, train.shape[3])
    total = np.zeros(train.shape[3]), np.zeros(train.shape[3])
    for start in range(0, len(pixels), 1 << 22):
        chunk = pixels[start:start + (1 << 22)].astype(np.float64) / PIXEL_SCALE
        total[0][:] += chunk.sum(0)
        total[1][:] += (chunk * chunk).sum(0)
    mean = total[0] / len(pixels)
    std = np.sqrt(np.maximum(total[1] / len(pixels) - mean * mean, 1e-12))
    return [float(v) for v in mean], [float(max(v, 1e-3)) for v in std]


def build_dataset(config: DataConfig, *, image_size: int | None = None, channels: int | None = None) -> PreparedData:
    """Read `config.dataset` and return fixed, resized splits with train statistics.

    `image_size`/`channels` override the recipe (evaluate uses the model's).
    """
    source = load_source(config.dataset, download=config.download, skip_bad=config.skip_bad)
    size = image_size or config.image_size
    channels = channels or _target_channels(config, source)
    splits = dict(source.splits)
    if "test" not in splits:
        kept, held = _stratified_split(splits["train"].labels, config.test_fraction, config.split_seed, "test")
        splits["test"] = _take(splits["train"], held)
        splits["train"] = _take(splits["train"], kept)
    if "val" not in splits:
        kept, held = _stratified_split(splits["train"].labels, config.val_fraction, config.split_seed + 1, "val")
        splits["val"] = _take(splits["train"], held)
        splits["train"] = _take(splits["train"], kept)
    if config.train_subset and config.train_subset < len(splits["train"]):
        _, subset = _stratified_split(splits["train"].labels, config.train_subset, config.split_seed + 2,
                                      "train_subset")
        splits["train"] = _take(splits["train"], subset)
    x = {name: _to_grid(splits[name], size, channels, f"resizing {name}") for name in SPLITS}
    y = {name: splits[name].labels for name in SPLITS}
    mean, std = _channel_stats(x["train"])
    manifest = {
        "format": CACHE_FORMAT,
        "dataset": config.dataset,
        "classes": source.classes,
        "image_size": size,
        "channels": channels,
        "resize": RESIZE_FILTER,
        "mean": mean,
        "std": std,
        "split": {"val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
                  "split_seed": config.split_seed, "train_subset": config.train_subset,
                  "given": sorted(source.splits)},
        "counts": {name: np.bincount(y[name], minlength=len(source.classes)).tolist() for name in SPLITS},
        "source_sha256": source.fingerprint,
        "bad_files": source.bad_files,
    }
    return PreparedData(source.classes, x, y, mean, std, manifest)


def _take(split: SourceSplit, indices: np.ndarray) -> SourceSplit:
    images = split.images
    taken = images[indices] if isinstance(images, np.ndarray) else [images[i] for i in indices]
    return SourceSplit(taken, split.labels[indices])


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def save_cache(data: PreparedData, directory: str | Path) -> Path:
    """Write the arrays as .npy files and the manifest with their sha256 sums."""
    directory = Path(directory)
    files = {}
    for split in SPLITS:
        for kind, array in (("x", data.x[split]), ("y", data.y[split])):
            name = f"{split}_{kind}.npy"
            write_with(directory / name, lambda tmp, a=array: _save_npy(tmp, a))
            files[name] = sha256_file(directory / name)
    write_json(directory / MANIFEST, {**data.manifest, "files": files})
    return directory / MANIFEST


def load_cache(directory: str | Path) -> PreparedData:
    """Read a cache written by `save_cache`, verifying every file's sha256."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise DhaError(f"no dataset cache at '{directory}'", "run `dha prepare RECIPE` first")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        manifest = {}
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise DhaError(f"dataset cache '{directory}' has an unreadable or old manifest",
                       "rerun `dha prepare RECIPE --force`")
    x, y = {}, {}
    for split in SPLITS:
        for kind, store in (("x", x), ("y", y)):
            name = f"{split}_{kind}.npy"
            path = directory / name
            if not path.is_file() or sha256_file(path) != manifest["files"].get(name):
                raise DhaError(f"dataset cache file '{path}' is missing or corrupt",
                               "rerun `dha prepare RECIPE --force`")
            store[split] = np.load(path, allow_pickle=False)
    return PreparedData(manifest["classes"], x, y, manifest["mean"], manifest["std"], manifest)
