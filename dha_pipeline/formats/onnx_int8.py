"""The ONNX int8 format (`model.int8.onnx`): onnxruntime static quantization of the fp32 ONNX file.

The fp32 ONNX model is first prepared by onnxruntime's `quant_pre_process` (shape inference and graph
optimization, which folds BatchNorm into convolutions), then quantized statically in the QDQ format:
int8 weights per output channel in a 7-bit range (`reduce_range`), uint8 activations whose ranges are
calibrated (min/max) on training images. Export holds the result to an accuracy gate (export/int8.py).

Why 7-bit weights: on x86 CPUs without VNNI (AVX2, and AVX-512 without VNNI) onnxruntime multiplies
uint8 activations by int8 weights with an instruction that adds pairs of products into int16 and
saturates, so full-range weights lose accuracy on those machines (measured on this project's 2-core AMD
EPYC, AVX2 only: the quickstart child lost 2.8 points of val top-1, the tests' tiny child 19 points;
with `reduce_range` both lost none). The exported file runs wherever it is deployed, so it is made
safe for every CPU.

The file is not written from the torch model (its record has no writer); it loads and carries its
metadata like the fp32 file.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dha_pipeline.formats.base import ModelFormat
from dha_pipeline.formats.onnx import INPUT_NAME, embed_onnx_metadata
from dha_pipeline.formats.onnx_runtime import load_onnx, read_onnx_metadata

CALIBRATION_BATCH = 32
QUANTIZATION = {"format": "QDQ", "weights": "int8 (7-bit range), per channel", "activations": "uint8, per tensor",
                "calibration": "minmax", "tool": "onnxruntime.quantization (quant_pre_process, quantize_static)"}
"""How `quantize_onnx` quantizes, as the metadata's int8 section records it."""


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs a warning through the root logger for every BatchNorm it leaves unquantized."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over float32 NCHW model inputs."""

    def __init__(self, input_name: str, inputs: np.ndarray) -> None:
        self.batches = iter([{input_name: inputs[start:start + CALIBRATION_BATCH]}
                             for start in range(0, len(inputs), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_onnx(fp32: Path, int8: Path, calibration: np.ndarray) -> None:
    """Write the int8 QDQ model of the ONNX model `fp32` to `int8`, its activation ranges calibrated on
    `calibration` (float32 NCHW model inputs). The fp32 file's metadata is carried over."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder, _quiet_quantizer():
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(int8), _Calibration(INPUT_NAME, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)


ONNX_INT8 = ModelFormat(name="onnx_int8", suffix=".onnx", file_name="model.int8.onnx", label="ONNX int8",
                        in_export=True, writer=None, embed=embed_onnx_metadata, loader=load_onnx,
                        read_metadata=read_onnx_metadata)
