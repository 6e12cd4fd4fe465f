"""Export a derived child to every requested format, gated on numeric parity.

Everything is written into a staging directory first; only when every format
passes the parity gate do the files move into `exports/<name>/`. A failed gate
leaves no file behind.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dha_pipeline.backends import OnnxBackend, TorchScriptBackend
from dha_pipeline.data.batches import BatchSource, first_images
from dha_pipeline.derive import Child
from dha_pipeline.errors import CheckFailed, DhaError
from dha_pipeline.export.metadata import METADATA_KEY, TORCHSCRIPT_EXTRA_FILE, input_spec, package_versions
from dha_pipeline.export.onnx_format import export_onnx
from dha_pipeline.export.parity import Parity, compare_logits
from dha_pipeline.export.torchscript_format import export_torchscript
from dha_pipeline.fileio import staged_directory, write_json, write_text
from dha_pipeline.layout import MODEL_FILES, ExportLayout
from dha_pipeline.preprocess import model_input
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import ExportConfig
from dha_pipeline.report.model_card import model_card
from dha_pipeline.spaces.cost import count_macs, count_params


@dataclass(frozen=True)
class ExportFormat:
    """One deployable format (its file name is `MODEL_FILES[name]`): writer, metadata embedder, loader."""

    write: Callable[[torch.nn.Module, torch.Tensor, Path, ExportConfig, dict[str, Any]], Any]
    embed: Callable[[Path, dict[str, Any]], None]
    load: Callable[[Path], Callable[[np.ndarray], np.ndarray]]


def _embed_onnx(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = json.dumps({**json.loads(entry.value), **metadata})
    onnx.save(proto, str(path))


def _embed_torchscript(path: Path, metadata: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
        torch.jit.save(module, str(path), _extra_files={TORCHSCRIPT_EXTRA_FILE: json.dumps(metadata)})


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(lambda m, x, p, cfg, meta: export_onnx(m, x, p, cfg.opset, meta),
                         _embed_onnx, lambda p: OnnxBackend(p, prefer_cuda=False)),
    "torchscript": ExportFormat(lambda m, x, p, cfg, meta: export_torchscript(m, x, p, meta),
                                _embed_torchscript, TorchScriptBackend),
}
assert set(FORMATS) == set(MODEL_FILES), "every export format needs a file name in the layout"


def check_formats(formats: list[str]) -> list[str]:
    """The requested formats, or one error naming the unknown one."""
    if not formats:
        raise DhaError("no export format given", "use --format " + ",".join(FORMATS))
    for name in formats:
        if name not in FORMATS:
            raise DhaError(f"unknown export format '{name}'", "use one or more of: " + ", ".join(FORMATS))
    return list(dict.fromkeys(formats))


def parity_images(val: BatchSource, train: BatchSource | None, count: int) -> tuple[np.ndarray, str]:
    """Up to `count` real images: validation first, topped up from train (when given) if val is small."""
    if len(val) >= count or train is None:
        return first_images([val], count), "val"
    return first_images([val, train], count), "val+train"


@dataclass
class ExportResult:
    """Files written and the parity measured for each format."""

    files: dict[str, Path]
    parity: dict[str, Parity]
    metadata: dict[str, Any]


def build_metadata(child: Child, name: str) -> dict[str, Any]:
    """The metadata contract of a child network (docs/ARCHITECTURE.md; parity is added after the gate)."""
    info = child.info
    return {
        "name": name,
        "classes": child.classes,
        "input": input_spec(child.image_size, child.channels, child.mean, child.std,
                            float(info["data"].get("eval_crop", 1.0))),
        "search_space": info["search_space"],
        "genotype": info["genotype"],
        "components": info["components"],
        "mode": info["mode"],
        "da_policy": info["da_policy"],
        "base_augment": info["base_augment"],
        "hyperparameters": info["hyperparameters"],
        "params": count_params(child.model),
        "macs": count_macs(child.model, child.channels, child.image_size),
        "recipe_sha256": info["recipe_sha256"],
        "data": info["data"],
        "versions": package_versions(),
    }


def export_child(child: Child, name: str, images: np.ndarray, images_source: str, config: ExportConfig,
                 formats: list[str], layout: ExportLayout) -> ExportResult:
    """Write every format into the export directory if, and only if, each passes the parity gate on
    `images` (uint8 NHWC, from `images_source`)."""
    formats = check_formats(formats)
    inputs = model_input(images, child.mean, child.std)
    model = child.model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    metadata = build_metadata(child, name)
    parity: dict[str, Parity] = {}
    with staged_directory(layout.root) as stage, progress_bar() as progress:
        staged = ExportLayout(stage)
        task = progress.add_task("exporting", total=len(formats))
        for fmt_name in formats:
            fmt = FORMATS[fmt_name]
            path = staged.model(fmt_name)
            progress.update(task, description=f"exporting {fmt_name}")
            fmt.write(model, torch.from_numpy(inputs[:2]), path, config, metadata)
            parity[fmt_name] = compare_logits(reference, fmt.load(path)(inputs))
            progress.advance(task)
            if not parity[fmt_name].passes(config.parity_max_abs_diff, config.parity_min_top1_agreement):
                result = parity[fmt_name]
                raise CheckFailed(
                    f"{fmt_name} export failed the parity gate: max |logit diff| {result.max_abs_diff:.2e} "
                    f"(limit {config.parity_max_abs_diff:.0e}), top-1 agreement {result.top1_agreement:.4f} "
                    f"(min {config.parity_min_top1_agreement}) on {result.num_samples} images; nothing was written",
                    "report this as a bug, or try another --opset")
        metadata["parity"] = {
            "max_abs_diff": max(p.max_abs_diff for p in parity.values()),
            "top1_agreement": min(p.top1_agreement for p in parity.values()),
            "num_samples": len(inputs), "images": images_source,
            "by_format": {k: v.to_dict() for k, v in parity.items()}}
        for fmt_name in formats:
            FORMATS[fmt_name].embed(staged.model(fmt_name), metadata)
        write_json(staged.metadata, metadata)
        write_text(staged.model_card, model_card(metadata, None))
    for stale in (f for f in FORMATS if f not in formats):
        layout.model(stale).unlink(missing_ok=True)
    return ExportResult({f: layout.model(f) for f in formats}, parity, metadata)

