"""The verified dataset cache: fixed splits of uint8 images, channel statistics, a manifest.

`build_dataset` turns a source into model-ready uint8 NHWC arrays with fixed train/val/test splits;
`save_cache` writes them (atomically) with a manifest of counts and sha256 sums; `load_cache` reads
back the splits a stage needs and verifies their sums. `build_split` makes one split alone from the
raw source, decoding only that split's images (what a standalone evaluation reads).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.data.batches import ArraySource, BatchSource
from dha_pipeline.data.images import decode_files, unreadable_images
from dha_pipeline.data.source import ImageFiles, SourceData, SourceSplit, load_source
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import sha256_file, write_json, write_with
from dha_pipeline.layout import MANIFEST, cache_file
from dha_pipeline.preprocess import PIXEL_SCALE, RESIZE_FILTER, prepare_image
from dha_pipeline.progress import progress_bar
from dha_pipeline.choices import SPLITS
from dha_pipeline.recipe import DataConfig

CACHE_FORMAT = 1
MEMORY = "memory"
FILES = "files"
ARRAY_KINDS = ("x", "y")
"""What the cache stores of a split held in memory: pixels and labels."""
INDEX_KINDS = ("files", "y", "sizes")
"""What the cache stores of a streamed split: its file index (paths, labels, image sizes)."""


@dataclass
class PreparedData:
    """The prepared splits (those loaded) and the manifest that describes them. Each split is a batch
    source read in order: in memory an `ArraySource` (uint8 NHWC at the recipe's size, int64 labels);
    streamed a `FileSource` over a file index, decoded by DataLoader workers."""

    manifest: dict[str, Any]
    sources: dict[str, BatchSource]

    @property
    def storage(self) -> str:
        """'memory' (pixels in the cache) or 'files' (an index; the pixels stay in the image files)."""
        return str(self.manifest.get("storage", MEMORY))

    @property
    def classes(self) -> list[str]:
        """Class names, in label order."""
        return list(self.manifest["classes"])

    def class_counts(self, split: str) -> list[int]:
        """Images per class in `split`, in label order."""
        return [int(count) for count in self.manifest["counts"][split]]

    @property
    def mean(self) -> list[float]:
        """Per-channel mean of the train pixels in [0, 1]."""
        return list(self.manifest["mean"])

    @property
    def std(self) -> list[float]:
        """Per-channel standard deviation of the train pixels in [0, 1]."""
        return list(self.manifest["std"])

    @property
    def eval_crop(self) -> float:
        """How evaluation views an image: 1 = whole image to a square, < 1 = the center crop."""
        return float(self.manifest.get("eval_crop", 1.0))

    @property
    def channels(self) -> int:
        """Number of image channels (1 or 3)."""
        return int(self.manifest["channels"])

    @property
    def image_size(self) -> int:
        """Side of the square images."""
        return int(self.manifest["image_size"])


def _target_channels(config: DataConfig, splits: dict[str, SourceSplit]) -> int:
    if config.channels != "auto":
        return int(config.channels)
    for split in splits.values():
        images = split.images
        if isinstance(images, np.ndarray):
            if images.ndim == 4 and images.shape[3] >= 3:
                return 3
        elif any(image.ndim == 3 and image.shape[2] >= 3 for image in images):
            return 3
    return 1


def _to_grid(split: SourceSplit, size: int, channels: int, description: str, crop: float = 1.0) -> np.ndarray:
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
            out[index] = prepare_image(image, size, channels, crop)
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


def _planned_splits(config: DataConfig, source: SourceData) -> dict[str, SourceSplit]:
    """train/val/test of the source, carving the missing ones from train by label (nothing decoded)."""
    splits = dict(source.splits)
    if "train" not in splits:
        raise DhaError(f"dataset '{config.dataset}' has only held-out splits ({', '.join(sorted(splits))}): it can be "
                       "evaluated, not trained on", "add a train/ folder, or use one folder of class folders")
    if "test" not in splits:
        kept, held = _stratified_split(splits["train"].labels, config.test_fraction, config.split_seed, "test")
        splits["test"] = splits["train"].take(held)
        splits["train"] = splits["train"].take(kept)
    if "val" not in splits:
        kept, held = _stratified_split(splits["train"].labels, config.val_fraction, config.split_seed + 1, "val")
        splits["val"] = splits["train"].take(held)
        splits["train"] = splits["train"].take(kept)
    if config.train_subset and config.train_subset < len(splits["train"]):
        _, subset = _stratified_split(splits["train"].labels, config.train_subset, config.split_seed + 2,
                                      "train_subset")
        splits["train"] = splits["train"].take(subset)
    return splits


def _decoded(splits: dict[str, SourceSplit], names: tuple[str, ...], skip_bad: bool
             ) -> tuple[dict[str, SourceSplit], list[str], str | None]:
    """The named splits with their image files decoded, the unreadable files, and a sha256 over the
    decoded files' names and bytes (None when no split came from files).

    Unreadable files end in one error listing them all, unless `skip_bad`; then they are dropped
    with their labels.
    """
    decoded: dict[str, SourceSplit] = {}
    bad: list[str] = []
    digests: list[str] = []
    for name in names:
        split = splits[name]
        files = split.images
        if isinstance(files, ImageFiles):
            images, kept, unreadable, digest = decode_files(files.paths, skip_bad=True, root=files.root,
                                                            description=f"reading {name}")
            if not images and skip_bad:
                folder = os.path.commonpath([str(path) for path in files.paths])
                raise DhaError(f"no readable images among the {len(files)} files of the {name} split "
                               f"(under '{folder}')", "check the image files")
            split = SourceSplit(images, split.labels[kept])
            bad += unreadable
            digests.append(digest)
        decoded[name] = split
    if bad and not skip_bad:
        raise unreadable_images(bad)
    fingerprint = hashlib.sha256("".join(digests).encode()).hexdigest() if digests else None
    return decoded, bad, fingerprint


def choose_storage(config: DataConfig, splits: dict[str, SourceSplit]) -> str:
    """'files' or 'memory' for these splits, as `data.storage` says ('auto': files when the pixels at the
    model's size would pass `data.memory_limit_mb`)."""
    from_files = all(isinstance(split.images, ImageFiles) for split in splits.values())
    if config.storage == FILES and not from_files:
        raise DhaError(f"data.storage = 'files' streams image files, and '{config.dataset}' is not a folder of them",
                       "use data.storage = 'memory' (or 'auto'), or an imagefolder:/imagenet: dataset")
    if config.storage != "auto":
        return config.storage
    channels = 3 if config.channels == "auto" else int(config.channels)
    pixels = sum(len(split) for split in splits.values()) * config.image_size ** 2 * channels
    return FILES if from_files and pixels > config.memory_limit_mb * 2**20 else MEMORY


def _manifest(config: DataConfig, source: SourceData, channels: int, mean: list[float], std: list[float],
              labels: dict[str, np.ndarray], fingerprint: str | None, bad_files: list[str], storage: str
              ) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "dataset": config.dataset,
        "storage": storage,
        "classes": source.classes,
        "image_size": config.image_size,
        "channels": channels,
        "resize": RESIZE_FILTER,
        "eval_crop": config.eval_crop,
        "mean": mean,
        "std": std,
        "split": {"val_fraction": config.val_fraction, "test_fraction": config.test_fraction,
                  "split_seed": config.split_seed, "train_subset": config.train_subset,
                  "given": sorted(source.splits)},
        "counts": {name: np.bincount(labels[name], minlength=len(source.classes)).tolist() for name in SPLITS},
        "source_sha256": source.fingerprint or fingerprint,
        "bad_files": bad_files,
    }


IMBALANCE_RATIO = 5.0
"""prepare warns when the train split's largest class has more than this many times the smallest's images."""


def imbalance_warning(manifest: dict[str, Any]) -> str | None:
    """A warning naming the largest and smallest train classes when they differ by more than IMBALANCE_RATIO."""
    counts, classes = manifest["counts"]["train"], manifest["classes"]
    largest, smallest = int(np.argmax(counts)), int(np.argmin(counts))
    if counts[largest] <= IMBALANCE_RATIO * counts[smallest]:
        return None
    return (f"the train split is imbalanced: class '{classes[largest]}' has {counts[largest]} images, class "
            f"'{classes[smallest]}' {counts[smallest]} (more than {IMBALANCE_RATIO:g}x); judge the model by balanced "
            f"accuracy and macro-F1 (dha evaluate reports both) and consider train.class_weights = \"balanced\"")


def build_dataset(config: DataConfig) -> PreparedData:
    """Read `config.dataset` and return fixed splits, resized to `config.image_size`, with train statistics
    (or, for streamed storage, a file index per split and statistics from a sample of train images)."""
    source = load_source(config.dataset, download=config.download)
    planned = _planned_splits(config, source)
    if choose_storage(config, planned) == FILES:
        return _build_index(config, source, planned)
    size = config.image_size
    splits, bad_files, files_fingerprint = _decoded(planned, SPLITS, config.skip_bad)
    channels = _target_channels(config, splits)
    arrays = {name: ArraySource(_to_grid(splits[name], size, channels, f"resizing {name}", config.eval_crop),
                                splits[name].labels) for name in SPLITS}
    mean, std = _channel_stats(arrays["train"].images)
    labels = {name: arrays[name].labels for name in SPLITS}
    manifest = _manifest(config, source, channels, mean, std, labels, files_fingerprint, bad_files, MEMORY)
    return PreparedData(manifest, dict(arrays))


def _build_index(config: DataConfig, source: SourceData, planned: dict[str, SourceSplit]) -> PreparedData:
    """The streamed form of `build_dataset`: headers read, a sample of train images decoded, no pixels kept."""
    from dha_pipeline.data.stream import FileSource, auto_workers, index_files, sample_statistics

    indexes, bad_files = {}, []
    for name in SPLITS:
        files = planned[name].images
        assert isinstance(files, ImageFiles)
        indexes[name], bad = index_files(files.paths, planned[name].labels, files.root, skip_bad=True,
                                         description=f"indexing {name}")
        bad_files += bad
    if bad_files and not config.skip_bad:
        raise unreadable_images(bad_files)
    channels, mean, std = sample_statistics(indexes["train"], config)
    digest = hashlib.sha256()
    for name in SPLITS:
        for array in indexes[name].arrays().values():
            digest.update(np.ascontiguousarray(array).tobytes())
    labels = {name: indexes[name].labels for name in SPLITS}
    manifest = _manifest(config, source, channels, mean, std, labels, digest.hexdigest(), bad_files, FILES)
    manifest["root"] = str(indexes["train"].root)
    workers = auto_workers() if config.workers < 0 else config.workers
    return PreparedData(manifest, {name: FileSource(indexes[name], config.image_size, channels, config.eval_crop,
                                                    workers, config.skip_bad) for name in SPLITS})


def build_split(config: DataConfig, split: str, *, image_size: int, channels: int
                ) -> tuple[list[str], BatchSource]:
    """The classes and one split of `config.dataset`, made as `build_dataset` makes it, decoding only
    that split's images (a split carved from train reads train's labels, not its pixels). A split that
    would pass `data.memory_limit_mb` is read from its files batch by batch."""
    source = load_source(config.dataset, download=config.download)
    planned = {split: source.splits[split]} if split in source.splits else _planned_splits(config, source)
    if choose_storage(config, {split: planned[split]}) == FILES:
        from dha_pipeline.data.stream import FileSource, auto_workers, index_files

        files = planned[split].images
        assert isinstance(files, ImageFiles)
        index, _ = index_files(files.paths, planned[split].labels, files.root, skip_bad=config.skip_bad,
                               description=f"indexing {split}")
        return source.classes, FileSource(index, image_size, channels, config.eval_crop, auto_workers(),
                                          config.skip_bad)
    splits, _, _ = _decoded(planned, (split,), config.skip_bad)
    return source.classes, ArraySource(_to_grid(splits[split], image_size, channels, f"resizing {split}",
                                                config.eval_crop), splits[split].labels)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def save_cache(data: PreparedData, directory: str | Path) -> Path:
    """Write the arrays (pixels and labels, or the file index) as .npy files and the manifest with their
    sha256 sums."""
    directory = Path(directory)
    files = {}
    for split in SPLITS:
        for kind, array in data.sources[split].arrays().items():
            name = cache_file(split, kind)
            write_with(directory / name, lambda tmp, a=array: _save_npy(tmp, a))
            files[name] = sha256_file(directory / name)
    write_json(directory / MANIFEST, {**data.manifest, "files": files})
    return directory / MANIFEST


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a cache written by `save_cache`, or one error saying how to make it."""
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
    return manifest


def load_cache(directory: str | Path, splits: tuple[str, ...] = SPLITS, *, workers: int = -1,
               skip_bad: bool = False) -> PreparedData:
    """Read the named splits of a cache written by `save_cache`, verifying each file's sha256. A streamed
    split reads its files through `workers` DataLoader processes (-1 = auto); an unreadable file stops it
    with its path, or is left out when `skip_bad`."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    streamed = manifest.get("storage") == FILES
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for split in splits:
        arrays[split] = {}
        for kind in (INDEX_KINDS if streamed else ARRAY_KINDS):
            name = cache_file(split, kind)
            path = directory / name
            if not path.is_file() or sha256_file(path) != manifest["files"].get(name):
                raise DhaError(f"dataset cache file '{path}' is missing or corrupt",
                               "rerun `dha prepare RECIPE --force`")
            arrays[split][kind] = np.load(path, allow_pickle=False)
    if not streamed:
        return PreparedData(manifest, {split: ArraySource(a["x"], a["y"]) for split, a in arrays.items()})
    from dha_pipeline.data.stream import FileIndex, FileSource, auto_workers

    root = Path(manifest["root"])
    if not root.is_dir():
        raise DhaError(f"the image folder '{root}' the cache indexes is gone",
                       "put the images back there, or rerun `dha prepare RECIPE --force`")
    workers = auto_workers() if workers < 0 else workers
    return PreparedData(manifest, {split: FileSource(FileIndex(root, a["files"], a["y"], a["sizes"]),
                                                     int(manifest["image_size"]), int(manifest["channels"]),
                                                     float(manifest.get("eval_crop", 1.0)), workers, skip_bad)
                                   for split, a in arrays.items()})
