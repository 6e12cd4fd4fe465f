"""Inference backends chosen by model file type: .onnx -> onnxruntime, .ts -> TorchScript, .pt -> torch.

Each backend maps a float32 NCHW numpy batch to numpy logits and carries the
model's metadata. The ONNX backend imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dha_pipeline.errors import DhaError
from dha_pipeline.export.metadata import metadata_from_session, open_onnx_session


class Backend(Protocol):
    """A loaded model that turns model inputs into logits."""

    name: str
    metadata: dict[str, Any]

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class OnnxBackend:
    """onnxruntime, on the CUDA provider when it is available, else the CPU."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, prefer_cuda: bool = True) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if prefer_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = open_onnx_session(path, providers)
        self.metadata = metadata_from_session(self.session, path)
        self.input_name = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class TorchScriptBackend:
    """A traced TorchScript model on the CPU."""

    name = "torchscript"
    provider = "cpu"

    def __init__(self, path: str | Path) -> None:
        from dha_pipeline.export.torchscript_format import load_torchscript

        self.module, self.metadata = load_torchscript(Path(path))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(batch)).numpy()


class TorchBackend:
    """The derived child (`runs/<name>/derived/child.pt`) as a plain torch module on the CPU."""

    name = "torch"
    provider = "cpu"

    def __init__(self, path: str | Path) -> None:
        from dha_pipeline.derive import load_child
        from dha_pipeline.export.metadata import input_spec

        child = load_child(Path(path))
        self.model = child.model
        self.metadata = {"name": Path(path).parent.parent.name, "classes": child.classes,
                         "input": input_spec(child.image_size, child.channels, child.mean, child.std),
                         **child.info}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(batch)).numpy()


BACKENDS = {".onnx": OnnxBackend, ".ts": TorchScriptBackend, ".pt": TorchBackend}


def load_backend(path: str | Path) -> Backend:
    """The backend for a model file, by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise DhaError(f"model file '{path}' does not exist", "check the path, e.g. exports/<name>/model.onnx")
    factory = BACKENDS.get(path.suffix.lower())
    if factory is None:
        raise DhaError(f"model file '{path}' has an unknown type '{path.suffix}'",
                       "pass a .onnx, .ts (TorchScript) or .pt (derived child) file")
    return factory(path)
