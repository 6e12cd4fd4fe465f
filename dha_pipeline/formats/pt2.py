"""The PyTorch 2 format (`model.pt2`): `torch.export` with a dynamic batch axis, the metadata inside the archive."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dha_pipeline.errors import DhaError
from dha_pipeline.formats.base import ModelFormat, Runtime, TorchModuleBackend, WriteSettings
from dha_pipeline.formats.metadata import ARCHIVE_METADATA_FILE, parse_metadata

if TYPE_CHECKING:
    import torch
    from torch import nn


@contextmanager
def _quiet_torch_export() -> Iterator[None]:
    """torch.export logs a long traceback for a file it cannot read, before raising."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_pt2(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any],
               _: WriteSettings | None = None) -> torch.export.ExportedProgram:
    """The writer: export `model` (eval mode) with `torch.export.export`, the batch axis dynamic, and save it
    with `metadata.json` embedded (no setting applies); returns the program, which `save_pt2` saves again
    with the final metadata (no second load)."""
    import torch

    model.eval()
    example = example if example.shape[0] >= 2 else example.repeat(2, 1, 1, 1)  # batch 1 would be specialized
    with _quiet_torch_export(), torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    save_pt2(path, metadata, program)
    return program


def save_pt2(path: Path, metadata: dict[str, Any], program: torch.export.ExportedProgram) -> None:
    """Write an exported program with `metadata` as its metadata.json (the embedder, given what `export_pt2`
    returned)."""
    import torch

    with _quiet_torch_export():
        torch.export.save(program, str(path), extra_files={ARCHIVE_METADATA_FILE: json.dumps(metadata)})


def load_pt2_program(path: Path) -> tuple[torch.export.ExportedProgram, dict[str, Any]]:
    """The exported program in a .pt2 file and its embedded metadata, or one error line."""
    import torch

    extra = {ARCHIVE_METADATA_FILE: ""}
    try:
        with _quiet_torch_export():
            program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad archives
        raise DhaError(f"'{path}' is not a valid PyTorch 2 model ({type(exc).__name__})",
                       "pass a model.pt2 written by `dha export`") from None
    if not extra[ARCHIVE_METADATA_FILE]:
        raise DhaError(f"PyTorch 2 model '{path}' carries no dha metadata", "export it with `dha export`")
    return program, parse_metadata(extra[ARCHIVE_METADATA_FILE], path)


def load_pt2(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A callable module from a .pt2 file (`torch.export.load(...).module()`) and its metadata."""
    program, metadata = load_pt2_program(path)
    return program.module(), metadata


class Pt2Backend(TorchModuleBackend):
    """A PyTorch 2 program (`torch.export.load(...).module()`) on the CPU."""

    name = "torch.export"

    def __init__(self, path: str | Path) -> None:
        self.module, self.metadata = load_pt2(Path(path))


def load_pt2_backend(path: Path, _: Runtime) -> Pt2Backend:
    """The loader (torch on the CPU: the runtime does not apply)."""
    return Pt2Backend(path)


def read_pt2_metadata(path: Path) -> dict[str, Any]:
    """The metadata embedded in a .pt2 file."""
    return load_pt2_program(path)[1]


PT2 = ModelFormat(name="pt2", suffix=".pt2", file_name="model.pt2", label="PyTorch 2 (.pt2)", in_export=True,
                  writer=export_pt2, embed=save_pt2, loader=load_pt2_backend, read_metadata=read_pt2_metadata)
