"""Inference backends chosen by model file type: .onnx -> onnxruntime, .ts -> TorchScript,
.pt2 -> torch.export (PyTorch 2), .pt -> the derived child in torch.

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


def onnx_providers(provider: str | None = None) -> list[str]:
    """onnxruntime providers to try, in order: `provider` when named ('cpu', 'cuda' or a full name such as
    'CUDAExecutionProvider'), else CUDA when installed; the CPU always last. Naming one that is not
    installed is an error."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider is None:
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    name = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(provider.lower(), provider)
    if name not in available:
        raise DhaError(f"onnxruntime provider '{provider}' is not installed here",
                       "use one of: " + ", ".join(available))
    return list(dict.fromkeys([name, "CPUExecutionProvider"]))


class OnnxBackend:
    """onnxruntime, on the CUDA provider when it is available (or on `provider`), else the CPU."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, prefer_cuda: bool = True, provider: str | None = None,
                 threads: int | None = None) -> None:
        providers = onnx_providers(provider) if prefer_cuda or provider else ["CPUExecutionProvider"]
        self.session = open_onnx_session(path, providers, threads)
        self.metadata = metadata_from_session(self.session, path)
        self.input_name = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class _TorchModuleBackend:
    """A torch module (`self.module`) on the CPU, called without gradients."""

    provider = "cpu"
    module: Any

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(batch)).numpy()


class TorchScriptBackend(_TorchModuleBackend):
    """A traced TorchScript model on the CPU."""

    name = "torchscript"

    def __init__(self, path: str | Path) -> None:
        from dha_pipeline.export.torchscript_format import load_torchscript

        self.module, self.metadata = load_torchscript(Path(path))


class Pt2Backend(_TorchModuleBackend):
    """A PyTorch 2 program (`torch.export.load(...).module()`) on the CPU."""

    name = "torch.export"

    def __init__(self, path: str | Path) -> None:
        from dha_pipeline.export.pt2_format import load_pt2

        self.module, self.metadata = load_pt2(Path(path))


class TorchBackend(_TorchModuleBackend):
    """The derived child (`runs/<name>/derived/child.pt`) as a plain torch module on the CPU."""

    name = "torch"

    def __init__(self, path: str | Path) -> None:
        from dha_pipeline.derive import load_child
        from dha_pipeline.export.metadata import input_spec

        child = load_child(Path(path))
        self.module = child.model
        self.metadata = {"classes": child.classes,
                         "input": input_spec(child.image_size, child.channels, child.mean, child.std),
                         **child.info}


BACKENDS = {".onnx": OnnxBackend, ".ts": TorchScriptBackend, ".pt2": Pt2Backend, ".pt": TorchBackend}


def load_backend(path: str | Path) -> Backend:
    """The backend for a model file, by its suffix."""
    path = Path(path)
    if not path.is_file():
        raise DhaError(f"model file '{path}' does not exist", "check the path, e.g. exports/<name>/model.onnx")
    factory = BACKENDS.get(path.suffix.lower())
    if factory is None:
        raise DhaError(f"model file '{path}' has an unknown type '{path.suffix}'",
                       "pass a .onnx, .ts (TorchScript), .pt2 (PyTorch 2) or .pt (derived child) file")
    return factory(path)
