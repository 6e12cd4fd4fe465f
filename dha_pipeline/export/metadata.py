"""The model metadata contract (docs/ARCHITECTURE.md, "Contracts"), embedded in every model file and in metadata.json.

Reading metadata from an ONNX file needs onnxruntime only (no torch), so
`dha predict` can use it.
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


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata embedded in an ONNX model, read with onnxruntime."""
    session = open_onnx_session(path)
    return metadata_from_session(session, path)


def metadata_from_session(session: Any, path: str | Path) -> dict[str, Any]:
    """Metadata of an open onnxruntime session, or a clear error if the model has none."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise DhaError(f"ONNX model '{path}' carries no dha metadata", "export it with `dha export`")
    return parse_metadata(raw, path)


def parse_metadata(raw: str, path: str | Path) -> dict[str, Any]:
    """The metadata JSON embedded in a model file, or one error line if it is damaged."""
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or not {"classes", "input"} <= set(metadata):
        raise DhaError(f"model '{path}' carries damaged dha metadata", "export it again with `dha export`")
    return metadata


def open_onnx_session(path: str | Path, providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An onnxruntime session (on `threads` intra-op threads; None = onnxruntime's choice), or one error line
    if the file is missing or not ONNX."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise DhaError(f"model file '{path}' does not exist", "check the path, e.g. exports/<name>/model.onnx")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
        raise DhaError(f"'{path}' is not a valid ONNX model ({type(exc).__name__})",
                       "pass a model.onnx written by `dha export`") from None
