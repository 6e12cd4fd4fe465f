"""The ONNX fp32 format (`model.onnx`): the dynamo exporter first, the legacy exporter as fallback, a dynamic
batch axis, the metadata in `metadata_props`; loaded in onnxruntime."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dha_pipeline.formats.base import ModelFormat, WriteSettings
from dha_pipeline.formats.metadata import METADATA_KEY
from dha_pipeline.formats.onnx_runtime import load_onnx, read_onnx_metadata

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset, external_data=False,
                      verbose=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes={"x": {0: batch}})


def _export_legacy(model: nn.Module, example: torch.Tensor, path: Path, opset: int) -> None:
    import torch

    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int,
                metadata: dict[str, Any]) -> str:
    """Write `model` to `path` as ONNX with a dynamic batch axis; returns the exporter used."""
    import onnx

    model.eval()
    example = example[:2] if example.shape[0] >= 2 else example.repeat(2, 1, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _export_dynamo(model, example, path, opset)
            exporter = "dynamo"
        except Exception as exc:  # noqa: BLE001 - the dynamo exporter fails in many ways; fall back
            log.warning("dynamo ONNX exporter failed (%s: %s); using the legacy exporter",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            _export_legacy(model, example, path, opset)
            exporter = "legacy"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({**metadata, "onnx_exporter": exporter})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return exporter


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: dict[str, Any],
               settings: WriteSettings) -> str:
    """The writer: `export_onnx` at the settings' opset."""
    return export_onnx(model, example, path, settings.opset, metadata)


def embed_onnx_metadata(path: Path, metadata: dict[str, Any], _: Any = None) -> None:
    """Replace the metadata of an ONNX file (fp32 or int8) with `metadata`, keeping the entries only the file
    knows (`onnx_exporter`)."""
    import onnx

    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = json.dumps({**json.loads(entry.value), **metadata})
    onnx.save(proto, str(path))


ONNX = ModelFormat(name="onnx", suffix=".onnx", file_name="model.onnx", label="ONNX fp32", in_export=True,
                   writer=write_onnx, embed=embed_onnx_metadata, loader=load_onnx, read_metadata=read_onnx_metadata)
