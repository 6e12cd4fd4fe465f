"""Every model format, in table order, and what is chosen among them: the loader of a file (by its suffix),
the formats export writes, and which file of an export is its primary model.

Adding a format: a module in formats/ that defines its `ModelFormat`, and one line in `FORMATS`.
"""

from __future__ import annotations

from pathlib import Path

from dha_pipeline.errors import DhaError
from dha_pipeline.formats.base import DEFAULT_RUNTIME, Backend, ModelFormat, Runtime
from dha_pipeline.formats.onnx import ONNX
from dha_pipeline.formats.onnx_int8 import ONNX_INT8
from dha_pipeline.formats.pt2 import PT2
from dha_pipeline.formats.torch_eager import TORCH_EAGER
from dha_pipeline.formats.torchscript import TORCHSCRIPT

FORMATS: dict[str, ModelFormat] = {record.name: record for record in (
    TORCH_EAGER,
    TORCHSCRIPT,
    PT2,
    ONNX,
    ONNX_INT8,
)}
"""Name -> record, in the order of benchmark tables (torch eager, the derived child, first)."""
PRIMARY_ORDER = ("onnx", "torchscript", "pt2")
"""Which file of an export is its primary model (the one `dha run` evaluates): the first of these present."""
WRITABLE = tuple(sorted((name for name, record in FORMATS.items() if record.writer is not None),
                        key=lambda name: PRIMARY_ORDER.index(name) if name in PRIMARY_ORDER else len(PRIMARY_ORDER)))
"""The formats export writes from the torch model (`export.formats`), primary ones first."""


def get_format(name: str) -> ModelFormat:
    """The record of format `name`, or one error line naming the known ones."""
    if name not in FORMATS:
        raise DhaError(f"unknown model format '{name}'", "use one of: " + ", ".join(FORMATS))
    return FORMATS[name]


def format_of(path: str | Path) -> ModelFormat:
    """The record that loads `path`, chosen by its suffix (any case; the first in table order where formats
    share one, as both ONNX formats do: they load alike), or one error line."""
    path = Path(path)
    suffix = path.suffix.lower()
    record = next((record for record in FORMATS.values() if record.suffix == suffix), None)
    if record is None:
        suffixes = list(dict.fromkeys(record.suffix for record in FORMATS.values()))
        kinds = f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"
        raise DhaError(f"model file '{path}' has an unknown type '{path.suffix}'",
                       f"pass a {kinds} file (written by dha export or dha derive)")
    return record


def load_backend(path: str | Path, runtime: Runtime = DEFAULT_RUNTIME) -> Backend:
    """The model in a file, loaded by the format its suffix names, to run on `runtime`."""
    path = Path(path)
    if not path.is_file():
        raise DhaError(f"model file '{path}' does not exist", "check the path, e.g. exports/<name>/model.onnx")
    return format_of(path).load(path, runtime)
