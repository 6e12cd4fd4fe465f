"""Top-k labels for image files from an ONNX model: onnxruntime, numpy and Pillow only (no torch).

Inputs are files, folders (every image below them, sorted) and glob patterns; images are decoded and
classified `batch_size` at a time. An image that cannot be read is reported by path and the others go on.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dha_pipeline.data.images import IMAGE_SUFFIXES
from dha_pipeline.errors import DhaError
from dha_pipeline.formats.registry import FORMATS
from dha_pipeline.preprocess import model_input, prepare_image, read_image

GLOB_CHARACTERS = set("*?[")


@dataclass
class Prediction:
    """The top-k (label, probability) pairs for one image."""

    path: str
    top: list[tuple[str, float]]

    def to_dict(self) -> dict[str, object]:
        """The JSON form: path and the top-k labels with their probabilities."""
        return {"path": self.path, "top": [{"label": label, "probability": p} for label, p in self.top]}


@dataclass
class Predictions:
    """What a predict call gives: one prediction per readable image, in input order, and the images that
    could not be read, each with the reason."""

    predictions: list[Prediction] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, folders as every image file below them and glob patterns as their matches (both
    sorted), in the order given, each path once. A pattern or folder that finds no image is an error."""
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        if Path(text).is_dir():
            matches = _folder_images(Path(text))
            if not matches:
                raise DhaError(f"folder '{text}' holds no images", "pass image files ("
                               + ", ".join(sorted(IMAGE_SUFFIXES)) + ") or a folder of them")
        elif GLOB_CHARACTERS & set(text) and not Path(text).exists():
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise DhaError(f"pattern '{text}' matches no files", "check the pattern (quote it so the "
                               "shell does not expand it first)")
        else:
            matches = [Path(text)]
        found += matches
    return list(dict.fromkeys(found))


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start:start + size]


def predict(model_path: str | Path, inputs: list[str | Path], top_k: int = 5, batch_size: int = 32) -> Predictions:
    """Classify every image of `inputs` (files, folders, glob patterns) with an exported ONNX model,
    `batch_size` images per call; unreadable images are collected, not raised."""
    model_path = Path(model_path)
    onnx = FORMATS["onnx"]
    if model_path.suffix.lower() != onnx.suffix:  # fp32 or int8: both load alike
        raise DhaError(f"predict needs an ONNX model, got '{model_path}'", "pass exports/<name>/model.onnx")
    backend = onnx.load(model_path)
    spec = backend.metadata["input"]
    classes = backend.metadata["classes"]
    crop = spec.get("crop", 1.0)
    k = min(top_k, len(classes))
    result = Predictions()
    for chunk in _batches(expand_inputs(inputs), batch_size):
        grids, readable = [], []
        for path in chunk:
            try:
                grids.append(prepare_image(read_image(path), spec["size"], spec["channels"], crop))
                readable.append(path)
            except DhaError as error:
                result.unreadable.append((str(path), str(error)))
        if not grids:
            continue
        probabilities = softmax(backend(model_input(np.stack(grids), spec["mean"], spec["std"])))
        for path, row in zip(readable, probabilities, strict=True):
            order = np.argsort(-row, kind="stable")[:k]  # ties: the lower class index first
            result.predictions.append(Prediction(str(path), [(classes[i], float(row[i])) for i in order]))
    return result
