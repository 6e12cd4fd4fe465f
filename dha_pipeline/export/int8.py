"""The int8 accuracy gate: the quantized model (formats/onnx_int8.py) against the fp32 ONNX model on the whole
validation split.

Both models are scored on every val image with onnxruntime on the CPU; export fails (and writes nothing)
when int8 loses more than `export.int8_max_drop` points of top-1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dha_pipeline.data.batches import BatchSource
from dha_pipeline.errors import CheckFailed
from dha_pipeline.formats.base import CPU
from dha_pipeline.formats.onnx import ONNX
from dha_pipeline.formats.onnx_int8 import ONNX_INT8, QUANTIZATION
from dha_pipeline.scoring import split_logits

FEW_CALIBRATION_IMAGES = 300
"""Below this many calibration images, export warns that the activation ranges may be poorly estimated."""


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


def check_int8(fp32: Path, int8: Path, val: BatchSource, mean: list[float], std: list[float], classes: int,
               calibration_images: int) -> Int8Check:
    """Both ONNX models on every image of the validation split `val` (onnxruntime, CPU)."""
    reference, labels = split_logits(ONNX.load(fp32, CPU), val, mean, std, classes,
                                      description="int8 gate: fp32 on val")
    quantized, _ = split_logits(ONNX_INT8.load(int8, CPU), val, mean, std, classes,
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
