"""What every model format provides: the `ModelFormat` record, the `Backend` a loader returns, and the
`Runtime` a loader is asked to run on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


class Backend(Protocol):
    """A loaded model: float32 NCHW model inputs -> numpy logits, with the model's embedded metadata, the
    name of the runtime that calls it and the provider it runs on."""

    name: str
    metadata: dict[str, Any]
    provider: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Runtime:
    """Where a loaded model runs. Only onnxruntime reads it: `provider` is 'cpu', 'cuda' or a full name such
    as 'CUDAExecutionProvider' (None: CUDA when installed, else the CPU), `threads` its intra-op threads
    (None: onnxruntime's choice). The torch formats run on the CPU with torch's own thread count."""

    provider: str | None = None
    threads: int | None = None


DEFAULT_RUNTIME = Runtime()
"""CUDA when onnxruntime has it, else the CPU."""
CPU = Runtime(provider="cpu")
"""The CPU only: what export's gates run on, so they measure what every machine computes."""


class WriteSettings(Protocol):
    """The export settings a writer may read (`recipe.ExportConfig` has them)."""

    opset: int


Writer = Callable[["torch.nn.Module", "torch.Tensor", Path, dict[str, Any], WriteSettings], Any]
"""(eval-mode model, example batch, path, metadata, settings) -> what `Embed` needs later (or None)."""
Embed = Callable[[Path, dict[str, Any], Any], None]
"""(written file, the final metadata, what the writer returned) -> None: replaces the embedded metadata."""
Loader = Callable[[Path, Runtime], Backend]
"""(model file, runtime) -> the loaded model."""
MetadataReader = Callable[[Path], dict[str, Any]]
"""model file -> the metadata embedded in it (one DhaError line for a damaged or foreign file)."""


@dataclass(frozen=True)
class ModelFormat:
    """One kind of model file. `writer` is None where export does not write the file from the torch model
    (the int8 model is quantized from the ONNX file; the derived child is written by derive); `embed` is
    None where export never rewrites the file's metadata (the derived child)."""

    name: str
    """The format's name in recipes, metadata and reports, e.g. 'onnx'."""
    suffix: str
    """The file suffix that selects the loader, lowercase with its dot, e.g. '.onnx'."""
    file_name: str
    """The file's name, e.g. 'model.onnx'."""
    label: str
    """How tables name it, e.g. 'ONNX fp32'."""
    in_export: bool
    """Whether the file lives in exports/<name>/ (else in runs/<name>/derived/: the derived child)."""
    writer: Writer | None
    embed: Embed | None
    loader: Loader
    read_metadata: MetadataReader

    def load(self, path: str | Path, runtime: Runtime = DEFAULT_RUNTIME) -> Backend:
        """The model in `path`, loaded to run on `runtime`."""
        return self.loader(Path(path), runtime)


class TorchModuleBackend:
    """A torch module (`self.module`) on the CPU, called without gradients: what the torch formats share."""

    provider = "cpu"
    module: Any

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(batch)).numpy()
