"""int8 ONNX: onnxruntime static quantization, checked on the validation split.

The fp32 ONNX model is first prepared by onnxruntime's `quant_pre_process` (shape inference and graph
optimization, which folds BatchNorm into convolutions), then quantized statically in the QDQ format:
int8 weights per output channel in a 7-bit range (`reduce_range`), uint8 activations whose ranges are
calibrated (min/max) on training images. The gate compares top-1 of the int8 and the fp32 model on the
whole validation split.

Why 7-bit weights: on x86 CPUs without VNNI (AVX2, and AVX-512 without VNNI) onnxruntime multiplies
uint8 activations by int8 weights with an instruction that adds pairs of products into int16 and
saturates, so full-range weights lose accuracy on those machines (measured on this project's 2-core AMD
EPYC, AVX2 only: the quickstart child lost 2.8 points of val top-1, the tests' tiny child 19 points;
with `reduce_range` both lost none). The exported file runs wherever it is deployed, so it is made
safe for every CPU.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.backends import OnnxBackend
from dha_pipeline.data.batches import BatchSource
from dha_pipeline.errors import CheckFailed
from dha_pipeline.scoring import split_logits

CALIBRATION_BATCH = 32
FEW_CALIBRATION_IMAGES = 300
"""Below this many calibration images, export warns that the activation ranges may be poorly estimated."""
QUANTIZATION = {"format": "QDQ", "weights": "int8 (7-bit range), per channel", "activations": "uint8, per tensor",
                "calibration": "minmax", "tool": "onnxruntime.quantization (quant_pre_process, quantize_static)"}


@dataclass(frozen=True)
class Int8Check:
    """Top-1 of the fp32 and the int8 model on the same validation images, and how often they agree."""

    fp32_top1: float
    int8_top1: float
    agreement: float
    num_samples: int
    calibration_images: int

    @property
    def drop_points(self) -> float:
        """How many top-1 percentage points int8 loses against fp32 (negative: it gains)."""
        return 100.0 * (self.fp32_top1 - self.int8_top1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the drop and how the model was quantized."""
        return {**asdict(self), "drop_points": self.drop_points, **QUANTIZATION}


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

    from dha_pipeline.export.onnx_format import INPUT_NAME

    with tempfile.TemporaryDirectory() as folder, _quiet_quantizer():
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(int8), _Calibration(INPUT_NAME, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)


def check_int8(fp32: Path, int8: Path, val: BatchSource, mean: list[float], std: list[float], classes: int,
               calibration_images: int) -> Int8Check:
    """Both ONNX models on every image of the validation split `val` (onnxruntime, CPU)."""
    reference, labels = split_logits(OnnxBackend(fp32, prefer_cuda=False), val, mean, std, classes,
                                      description="int8 gate: fp32 on val")
    quantized, _ = split_logits(OnnxBackend(int8, prefer_cuda=False), val, mean, std, classes,
                                description="int8 gate: int8 on val")
    return Int8Check(float((reference.argmax(1) == labels).mean()), float((quantized.argmax(1) == labels).mean()),
                     float((reference.argmax(1) == quantized.argmax(1)).mean()), int(len(labels)),
                     calibration_images)


def enforce_int8_gate(check: Int8Check, max_drop_points: float) -> None:
    """Raise CheckFailed (exit 1) when int8 loses more than `max_drop_points` of top-1 against fp32."""
    if check.drop_points > max_drop_points + 1e-9:  # top-1 shares are fractions of counts: allow float rounding
        raise CheckFailed(
            f"int8 export failed its accuracy gate: val top-1 {100 * check.int8_top1:.2f}% against fp32 "
            f"{100 * check.fp32_top1:.2f}% on {check.num_samples} images, a drop of {check.drop_points:.2f} points "
            f"(limit export.int8_max_drop = {max_drop_points:g}); nothing was written",
            "calibrate on more images (export.int8_calibration_images), allow a larger drop "
            "(--set export.int8_max_drop=...), or export without --int8")
