"""The TorchScript format (`model.ts`): the model traced, the metadata as an extra file of the archive."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dha_pipeline.errors import DhaError
from dha_pipeline.formats.base import ModelFormat, Runtime, TorchModuleBackend, WriteSettings
from dha_pipeline.formats.metadata import ARCHIVE_METADATA_FILE, parse_metadata

if TYPE_CHECKING:
    import torch
    from torch import nn


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any],
                       _: WriteSettings | None = None) -> None:
    """The writer: trace `model` on `example` and save it with `metadata.json` embedded (no setting applies)."""
    import torch

    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={ARCHIVE_METADATA_FILE: json.dumps(metadata)})


def embed_torchscript_metadata(path: Path, metadata: dict[str, Any], _: Any = None) -> None:
    """Save the TorchScript file again with `metadata` as its metadata.json."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
        torch.jit.save(module, str(path), _extra_files={ARCHIVE_METADATA_FILE: json.dumps(metadata)})


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A TorchScript model and its embedded metadata."""
    import torch

    extra = {ARCHIVE_METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:  # noqa: BLE001 - torch raises several types for bad archives
            raise DhaError(f"'{path}' is not a valid TorchScript model ({type(exc).__name__})",
                           "pass a model.ts written by `dha export`") from None
    if not extra[ARCHIVE_METADATA_FILE]:
        raise DhaError(f"TorchScript model '{path}' carries no dha metadata", "export it with `dha export`")
    return module.eval(), parse_metadata(extra[ARCHIVE_METADATA_FILE], path)


class TorchScriptBackend(TorchModuleBackend):
    """A traced TorchScript model on the CPU."""

    name = "torchscript"

    def __init__(self, path: str | Path) -> None:
        self.module, self.metadata = load_torchscript(Path(path))


def load_torchscript_backend(path: Path, _: Runtime) -> TorchScriptBackend:
    """The loader (torch on the CPU: the runtime does not apply)."""
    return TorchScriptBackend(path)


def read_torchscript_metadata(path: Path) -> dict[str, Any]:
    """The metadata embedded in a TorchScript file."""
    return load_torchscript(path)[1]


TORCHSCRIPT = ModelFormat(name="torchscript", suffix=".ts", file_name="model.ts", label="TorchScript", in_export=True,
                          writer=export_torchscript, embed=embed_torchscript_metadata, loader=load_torchscript_backend,
                          read_metadata=read_torchscript_metadata)
