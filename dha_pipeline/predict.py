"""Top-k labels for image files from an ONNX model: onnxruntime, numpy and Pillow only (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dha_pipeline.backends import OnnxBackend
from dha_pipeline.errors import DhaError
from dha_pipeline.preprocess import model_input, prepare_image, read_image

@dataclass
class Prediction:
    """The top-k (label, probability) pairs for one image."""

    path: str
    top: list[tuple[str, float]]


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
    crop = spec.get("crop", 1.0)
    grid = np.stack([prepare_image(read_image(Path(p)), spec["size"], spec["channels"], crop) for p in images])
    probabilities = softmax(backend(model_input(grid, spec["mean"], spec["std"])))
    k = min(top_k, len(classes))
    results = []
    for path, row in zip(images, probabilities, strict=True):
        order = np.argsort(-row)[:k]
        results.append(Prediction(str(path), [(classes[i], float(row[i])) for i in order]))
    return results
