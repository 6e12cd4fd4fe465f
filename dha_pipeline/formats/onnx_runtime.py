"""ONNX files in onnxruntime: provider choice, sessions, the embedded metadata, and the backend that both
ONNX formats (fp32 and int8) load into. onnxruntime only: no torch, so `dha predict` can use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.errors import DhaError
from dha_pipeline.formats.base import Runtime
from dha_pipeline.formats.metadata import METADATA_KEY, parse_metadata


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


def metadata_from_session(session: Any, path: str | Path) -> dict[str, Any]:
    """Metadata of an open onnxruntime session, or a clear error if the model has none."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise DhaError(f"ONNX model '{path}' carries no dha metadata", "export it with `dha export`")
    return parse_metadata(raw, path)


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata embedded in an ONNX model, read with onnxruntime."""
    session = open_onnx_session(path)
    return metadata_from_session(session, path)


class OnnxBackend:
    """onnxruntime, on `provider` ('cpu', 'cuda', a full name; None: CUDA when it is installed, else the CPU)
    with `threads` intra-op threads (None: onnxruntime's choice)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, provider: str | None = None, threads: int | None = None) -> None:
        self.session = open_onnx_session(path, onnx_providers(provider), threads)
        self.metadata = metadata_from_session(self.session, path)
        self.input_name = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def load_onnx(path: Path, runtime: Runtime) -> OnnxBackend:
    """An ONNX model (fp32 or int8) in onnxruntime on `runtime`."""
    return OnnxBackend(path, provider=runtime.provider, threads=runtime.threads)
