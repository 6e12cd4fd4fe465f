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
from dha_pipeline.data.cache import PreparedData
from dha_pipeline.derive import Child
from dha_pipeline.errors import CheckFailed, DhaError
from dha_pipeline.export.metadata import METADATA_KEY, TORCHSCRIPT_EXTRA_FILE, input_spec, package_versions
from dha_pipeline.export.onnx_format import export_onnx
from dha_pipeline.export.parity import Parity, compare_logits
from dha_pipeline.export.torchscript_format import export_torchscript
from dha_pipeline.fileio import staged_directory, write_json, write_text
from dha_pipeline.preprocess import model_input
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import ExportConfig
from dha_pipeline.report.model_card import model_card
from dha_pipeline.spaces.cost import count_macs, count_params


@dataclass(frozen=True)
class ExportFormat:
    """One deployable format: its file name, writer, metadata embedder and loader for parity."""

    filename: str
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
    "onnx": ExportFormat("model.onnx", lambda m, x, p, cfg, meta: export_onnx(m, x, p, cfg.opset, meta),
                         _embed_onnx, lambda p: OnnxBackend(p, prefer_cuda=False)),
    "torchscript": ExportFormat("model.ts", lambda m, x, p, cfg, meta: export_torchscript(m, x, p, meta),
                                _embed_torchscript, TorchScriptBackend),
}


def check_formats(formats: list[str]) -> list[str]:
    """The requested formats, or one error naming the unknown one."""
    if not formats:
        raise DhaError("no export format given", "use --format " + ",".join(FORMATS))
    for name in formats:
        if name not in FORMATS:
            raise DhaError(f"unknown export format '{name}'", "use one or more of: " + ", ".join(FORMATS))
    return list(dict.fromkeys(formats))


def parity_images(data: PreparedData, count: int) -> tuple[np.ndarray, str]:
    """Up to `count` real images: validation first, topped up from train if val is small."""
    images = data.x["val"][:count]
    source = "val"
    if len(images) < count:
        images = np.concatenate([images, data.x["train"][:count - len(images)]])
        source = "val+train"
    return images, source


@dataclass
class ExportResult:
    """Files written and the parity measured for each format."""

    files: dict[str, Path]
    parity: dict[str, Parity]
    metadata: dict[str, Any]


def build_metadata(child: Child, name: str) -> dict[str, Any]:
    """The DESIGN.md metadata of a child network (parity is added after the gate)."""
    config = child.config
    info = child.info
    return {
        "name": name,
        "classes": child.classes,
        "input": input_spec(config.image_size, config.in_channels, child.mean, child.std),
        "search_space": info["search_space"],
        "genotype": info["genotype"],
        "components": info["components"],
        "mode": info["mode"],
        "da_policy": info["da_policy"],
        "base_augment": info["base_augment"],
        "hyperparameters": info["hyperparameters"],
        "params": count_params(child.model),
        "macs": count_macs(child.model, config.in_channels, config.image_size),
        "recipe_sha256": info["recipe_sha256"],
        "data": info["data"],
        "versions": package_versions(),
    }


def export_child(child: Child, name: str, data: PreparedData, config: ExportConfig, formats: list[str],
                 export_dir: Path) -> ExportResult:
    """Write every format into `export_dir` if, and only if, each passes the parity gate."""
    formats = check_formats(formats)
    images, source = parity_images(data, config.parity_samples)
    inputs = model_input(images, child.mean, child.std)
    model = child.model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    metadata = build_metadata(child, name)
    parity: dict[str, Parity] = {}
    with staged_directory(export_dir) as stage, progress_bar() as progress:
        task = progress.add_task("exporting", total=len(formats))
        for fmt_name in formats:
            fmt = FORMATS[fmt_name]
            path = stage / fmt.filename
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
            "num_samples": len(inputs), "images": source,
            "by_format": {k: v.to_dict() for k, v in parity.items()}}
        for fmt_name in formats:
            FORMATS[fmt_name].embed(stage / FORMATS[fmt_name].filename, metadata)
        write_json(stage / "metadata.json", metadata)
        write_text(stage / "MODEL_CARD.md", model_card(metadata, None))
    stale = [FORMATS[f].filename for f in FORMATS if f not in formats]
    for filename in stale:
        (export_dir / filename).unlink(missing_ok=True)
    files = {f: export_dir / FORMATS[f].filename for f in formats}
    return ExportResult(files, parity, metadata)

