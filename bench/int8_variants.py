"""Which ops to quantize: batch-1 latency and val top-1 of int8 variants of one export, against its fp32 ONNX.

Every variant is quantized as `dha export --int8` does (quant_pre_process, static QDQ, per-channel int8
weights in a 7-bit range, uint8 activations calibrated on training images spread over the split) and
differs only in the ops it quantizes. Batch-1 calls are timed round-robin on one onnxruntime thread; the last column is
each variant's latency over the fp32 model's (the issue's goal for what dha writes: <= 0.7).

    python bench/int8_variants.py EXPORT_DIR RUN_DIR [--calibration 512] [--rounds 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians  # noqa: E402

from dha_pipeline.data.batches import first_images, spread_images  # noqa: E402
from dha_pipeline.data.cache import load_cache  # noqa: E402
from dha_pipeline.formats.onnx import INPUT_NAME  # noqa: E402
from dha_pipeline.formats.onnx_int8 import _Calibration, _quiet_quantizer  # noqa: E402
from dha_pipeline.formats.onnx_runtime import open_onnx_session  # noqa: E402
from dha_pipeline.layout import RunLayout  # noqa: E402
from dha_pipeline.preprocess import model_input  # noqa: E402


def variants(prepared: Path) -> dict[str, dict[str, Any]]:
    """quantize_static keyword sets: every op (dha's setting), the same with full-range 8-bit weights (dha's
    setting before the 7-bit range; it saturates on CPUs without VNNI), and narrower choices of ops."""
    import onnx

    model = onnx.load(str(prepared))
    depthwise = [node.name for node in model.graph.node if node.op_type == "Conv" and any(
        a.name == "group" and a.i > 1 for a in node.attribute)]
    return {"every op (dha)": {}, "every op, 8-bit weights": {"reduce_range": False},
            "Conv, Gemm": {"op_types_to_quantize": ["Conv", "Gemm"]},
            "Conv, Gemm, Add, Concat": {"op_types_to_quantize": ["Conv", "Gemm", "Add", "Concat"]},
            "no pooling": {"op_types_to_quantize": ["Conv", "Gemm", "Add", "Concat", "Relu", "Mul"]},
            "depthwise left fp32": {"nodes_to_exclude": depthwise}}


def main() -> None:
    """Quantize, score on val, time, print one row per variant."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=150)
    args = parser.parse_args()
    meta = json.loads((args.export_dir / "metadata.json").read_text())
    mean, std = meta["input"]["mean"], meta["input"]["std"]
    cache = RunLayout.of(args.run_dir.parent, "", args.run_dir.name).cache
    train = load_cache(cache, ("train",)).sources["train"]
    val = load_cache(cache, ("val",)).sources["val"]
    calibration = model_input(spread_images(train, args.calibration), mean, std)
    images, labels = next(iter(val.batches(len(val))))
    inputs = model_input(images, mean, std)
    single = model_input(first_images([val], 1), mean, std)
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(args.export_dir / "model.onnx"), str(prepared))
        files = {"fp32": args.export_dir / "model.onnx"}
        for index, (name, options) in enumerate(variants(prepared).items()):
            files[name] = Path(folder) / f"variant_{index}.onnx"
            with _quiet_quantizer():
                quantize_static(str(prepared), str(files[name]), _Calibration(INPUT_NAME, calibration),
                                **{"quant_format": QuantFormat.QDQ, "per_channel": True, "reduce_range": True,
                                   "activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8,
                                   "calibrate_method": CalibrationMethod.MinMax, **options})
        sessions = {name: open_onnx_session(path, threads=1) for name, path in files.items()}
        medians = interleaved_medians({name: (lambda s=session: s.run(None, {INPUT_NAME: single}))
                                       for name, session in sessions.items()}, args.rounds, warmup=10)
        print(f"{'variant':28s} {'val top-1':>9s} {'batch-1 ms':>10s} {'/ fp32':>7s}")
        for name, session in sessions.items():
            logits = session.run(None, {INPUT_NAME: inputs})[0]
            top1 = float((logits.argmax(1) == labels).mean())
            print(f"{name:28s} {100 * top1:8.2f}% {1000 * medians[name]:10.3f} {medians[name] / medians['fp32']:7.2f}")


if __name__ == "__main__":
    main()
