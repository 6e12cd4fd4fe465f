"""TorchScript export by tracing, with the metadata as an extra file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dha_pipeline.errors import DhaError
from dha_pipeline.export.metadata import ARCHIVE_METADATA_FILE, parse_metadata


def export_torchscript(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any]) -> None:
    """Trace `model` on `example` and save it with `metadata.json` embedded."""
    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={ARCHIVE_METADATA_FILE: json.dumps(metadata)})


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A TorchScript model and its embedded metadata."""
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
