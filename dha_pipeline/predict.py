"""Top-k labels for image files from an ONNX model: onnxruntime, numpy and Pillow only (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dha_pipeline.backends import OnnxBackend
from dha_pipeline.errors import DhaError
from dha_pipeline.preprocess import model_input, prepare_image

DIRECT_MODES = ("L", "LA", "RGB", "RGBA")


@dataclass
class Prediction:
    """The top-k (label, probability) pairs for one image."""

    path: str
    top: list[tuple[str, float]]


def read_image(path: Path) -> np.ndarray:
    """A uint8 HW or HWC array from an image file, or one error line if it is not an image."""
    if not path.is_file():
        raise DhaError(f"image '{path}' does not exist", "check the path")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in DIRECT_MODES:
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError):
        raise DhaError(f"'{path}' is not a readable image", "pass JPEG, PNG, BMP, GIF, WebP or TIFF files") from None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predict(model_path: str | Path, images: list[str | Path], top_k: int = 5) -> list[Prediction]:
    """Classify each image with an exported ONNX model."""
    model_path = Path(model_path)
    if model_path.suffix.lower() != ".onnx":
        raise DhaError(f"predict needs an ONNX model, got '{model_path}'", "pass exports/<name>/model.onnx")
    backend = OnnxBackend(model_path)
    spec = backend.metadata["input"]
    classes = backend.metadata["classes"]
    grid = np.stack([prepare_image(read_image(Path(p)), spec["size"], spec["channels"]) for p in images])
    probabilities = softmax(backend(model_input(grid, spec["mean"], spec["std"])))
    k = min(top_k, len(classes))
    results = []
    for path, row in zip(images, probabilities):
        order = np.argsort(-row)[:k]
        results.append(Prediction(str(path), [(classes[i], float(row[i])) for i in order]))
    return results
