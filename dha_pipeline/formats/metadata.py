"""The model metadata contract (docs/ARCHITECTURE.md, "Contracts"): where a model file carries it, what its
input spec and package versions look like, and how a damaged copy is reported.

Every format embeds the same metadata (as metadata.json beside the files); nothing here imports torch.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from dha_pipeline.errors import DhaError
from dha_pipeline.preprocess import PIXEL_SCALE, RESIZE_FILTER

METADATA_KEY = "dha_metadata"
"""The key of the metadata in an ONNX model's `metadata_props`."""
ARCHIVE_METADATA_FILE = "metadata.json"
"""The metadata file inside the zip archives of TorchScript (.ts) and PyTorch 2 (.pt2) models."""
VERSIONED_PACKAGES = ("dha", "torch", "torchvision", "kornia", "onnx", "onnxruntime", "numpy")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shaped the model, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def input_spec(image_size: int, channels: int, mean: list[float], std: list[float], crop: float = 1.0
               ) -> dict[str, Any]:
    """How raw pixels become the model's input tensor: resized to size x size (`crop` 1.0), or the
    shorter side resized to size / crop and the center size x size taken (`crop` < 1); then scaled
    to [0, 1] and normalized."""
    return {"size": image_size, "channels": channels, "mean": mean, "std": std, "layout": "NCHW",
            "dtype": "float32", "pixel_range": [0.0, 1.0], "pixel_scale": 1.0 / PIXEL_SCALE,
            "resize": RESIZE_FILTER, "crop": crop}


def parse_metadata(raw: str, path: str | Path) -> dict[str, Any]:
    """The metadata JSON embedded in a model file, or one error line if it is damaged."""
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or not {"classes", "input"} <= set(metadata):
        raise DhaError(f"model '{path}' carries damaged dha metadata", "export it again with `dha export`")
    return metadata
