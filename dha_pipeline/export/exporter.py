"""Export a derived child to every requested format, gated on numeric parity.

Everything is written into a staging directory first; only when every format
passes the parity gate do the files move into `exports/<name>/`. A failed gate
leaves no file behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dha_pipeline.data.batches import BatchSource, first_images
from dha_pipeline.derive import Child
from dha_pipeline.errors import CheckFailed, DhaError
from dha_pipeline.export.int8 import check_int8, enforce_int8_gate
from dha_pipeline.export.parity import Parity, compare_logits
from dha_pipeline.fileio import staged_directory, write_json
from dha_pipeline.formats.base import CPU
from dha_pipeline.formats.metadata import input_spec, package_versions
from dha_pipeline.formats.onnx_int8 import ONNX_INT8, quantize_onnx
from dha_pipeline.formats.registry import FORMATS, WRITABLE, get_format
from dha_pipeline.layout import ExportLayout
from dha_pipeline.preprocess import model_input
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import ExportConfig
from dha_pipeline.report.model_card import write_model_card
from dha_pipeline.spaces.cost import count_macs, count_params
from dha_pipeline.spaces.registry import get_space

INT8 = ONNX_INT8.name
"""The int8 model, quantized from the ONNX file and held to the accuracy gate instead of the parity gate."""


def check_formats(formats: list[str]) -> list[str]:
    """The requested formats (those written from the torch model), or one error naming the unknown one."""
    if not formats:
        raise DhaError("no export format given", "use --format " + ",".join(WRITABLE))
    for name in formats:
        if name not in WRITABLE:
            raise DhaError(f"unknown export format '{name}'", "use one or more of: " + ", ".join(WRITABLE))
    return list(dict.fromkeys(formats))


def parity_images(val: BatchSource, train: BatchSource | None, count: int) -> tuple[np.ndarray, str]:
    """Up to `count` real images: validation first, topped up from train (when given) if val is small."""
    if len(val) >= count or train is None:
        return first_images([val], count), "val"
    return first_images([val, train], count), "val+train"


@dataclass(frozen=True)
class Int8Inputs:
    """What the int8 export needs: uint8 NHWC training images to calibrate on, and the validation split
    that gates it."""

    calibration: np.ndarray
    val: BatchSource


@dataclass
class ExportResult:
    """Files written and the parity measured for each format."""

    files: dict[str, Path]
    parity: dict[str, Parity]
    metadata: dict[str, Any]


def build_metadata(child: Child, name: str, images: dict[str, int] | None = None,
                   child_file: Path | None = None) -> dict[str, Any]:
    """The metadata contract of a child network (docs/ARCHITECTURE.md; parity is added after the gate);
    `images` counts the images of each prepared split, `child_file` is the derived child it came from.
    `network` holds the space's description rows of the genotype, so the model card needs no space."""
    info = child.info
    space = get_space(info["search_space"])
    return {
        "name": name,
        "classes": child.classes,
        "input": input_spec(child.image_size, child.channels, child.mean, child.std,
                            float(info["data"].get("eval_crop", 1.0))),
        "search_space": info["search_space"],
        "genotype": info["genotype"],
        "network": space.describe(space.genotype_from_dict(info["genotype"])),
        "components": info["components"],
        "mode": info["mode"],
        "da_policy": info["da_policy"],
        "base_augment": info["base_augment"],
        "hyperparameters": info["hyperparameters"],
        "params": count_params(child.model),
        "macs": count_macs(child.model, child.channels, child.image_size),
        "recipe_sha256": info["recipe_sha256"],
        "data": {**info["data"], **({"images": images} if images else {})},
        "versions": package_versions(),
        **({"child": str(child_file)} if child_file else {}),
    }


def _write_int8(staged: ExportLayout, child: Child, int8: Int8Inputs, config: ExportConfig,
                reference: np.ndarray, inputs: np.ndarray) -> dict[str, Any]:
    """Quantize the staged ONNX model, gate it on val top-1; its metadata section (parity included)."""
    quantize_onnx(staged.model("onnx"), staged.model(INT8), model_input(int8.calibration, child.mean, child.std))
    check = check_int8(staged.model("onnx"), staged.model(INT8), int8.val, child.mean, child.std,
                       len(child.classes), len(int8.calibration))
    enforce_int8_gate(check, config.int8_max_drop)
    parity = compare_logits(reference, ONNX_INT8.load(staged.model(INT8), CPU)(inputs))
    return {**check.to_dict(), "max_drop_points": config.int8_max_drop, "parity": parity.to_dict()}


def export_child(child: Child, name: str, images: np.ndarray, images_source: str, config: ExportConfig,
                 formats: list[str], layout: ExportLayout, int8: Int8Inputs | None = None,
                 split_images: dict[str, int] | None = None, child_file: Path | None = None) -> ExportResult:
    """Write every format into the export directory if, and only if, each passes the parity gate on
    `images` (uint8 NHWC, from `images_source`), and, given `int8`, the int8 model its accuracy gate.
    `split_images` (images per prepared split) and `child_file` (the derived child, which `dha benchmark`
    times as torch eager) go into the metadata."""
    formats = check_formats(formats)
    if int8 is not None and "onnx" not in formats:
        raise DhaError("the int8 model is quantized from the ONNX model, which is not among the formats",
                       "add onnx to --format, or drop --int8")
    inputs = model_input(images, child.mean, child.std)
    model = child.model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    metadata = build_metadata(child, name, split_images, child_file)
    parity: dict[str, Parity] = {}
    returned: dict[str, Any] = {}
    written = [*formats, *([INT8] if int8 is not None else [])]
    with staged_directory(layout.root) as stage, progress_bar() as progress:
        staged = ExportLayout(stage)
        task = progress.add_task("exporting", total=len(written))
        for fmt_name in formats:
            record = get_format(fmt_name)
            assert record.writer is not None  # check_formats admits only the formats written from the model
            path = staged.model(fmt_name)
            progress.update(task, description=f"exporting {fmt_name}")
            returned[fmt_name] = record.writer(model, torch.from_numpy(inputs[:2]), path, metadata, config)
            parity[fmt_name] = compare_logits(reference, record.load(path, CPU)(inputs))
            progress.advance(task)
            if not parity[fmt_name].passes(config.parity_max_abs_diff, config.parity_min_top1_agreement):
                result = parity[fmt_name]
                raise CheckFailed(
                    f"{fmt_name} export failed the parity gate: max |logit diff| {result.max_abs_diff:.2e} "
                    f"(limit {config.parity_max_abs_diff:.0e}), top-1 agreement {result.top1_agreement:.4f} "
                    f"(min {config.parity_min_top1_agreement}) on {result.num_samples} images; nothing was written",
                    "report this as a bug, or try another --opset")
        if int8 is not None:
            progress.update(task, description="quantizing int8")
            metadata["int8"] = _write_int8(staged, child, int8, config, reference, inputs)
            progress.advance(task)
        metadata["parity"] = {
            "max_abs_diff": max(p.max_abs_diff for p in parity.values()),
            "top1_agreement": min(p.top1_agreement for p in parity.values()),
            "num_samples": len(inputs), "images": images_source,
            "by_format": {k: v.to_dict() for k, v in parity.items()}}
        for fmt_name in written:
            embed = get_format(fmt_name).embed
            assert embed is not None  # every format export writes carries its metadata
            embed(staged.model(fmt_name), metadata, returned.get(fmt_name))
        write_json(staged.metadata, metadata)
        get_space(metadata["search_space"]).plot(metadata["genotype"], staged.network_png)
        write_model_card(staged)
    exported = [name for name, record in FORMATS.items() if record.in_export]
    for stale in [*(layout.model(f) for f in exported if f not in written), *layout.reports()]:
        stale.unlink(missing_ok=True)  # files and reports of the model this export replaced
    return ExportResult({f: layout.model(f) for f in written}, parity, metadata)
