"""Evaluate a model file on held-out data: accuracy, per-class accuracy, confusion matrix, latency.

Preprocessing comes from the model's own metadata and uses the same functions as training
(`prepare_image`, `model_input`), so a model file alone is enough. Images come through a batch
source: the prepared split inside `dha run`, or one split decoded from a dataset spec by
`dha evaluate --data SPEC`.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.data.batches import BatchSource, first_images
from dha_pipeline.data.cache import build_split
from dha_pipeline.data.source import parse_spec
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.formats.base import Backend
from dha_pipeline.formats.registry import load_backend
from dha_pipeline.layout import ExportLayout
from dha_pipeline.metrics import (TOP5_ABOVE_CLASSES, call_milliseconds, class_balanced_scores, per_class_mean,
                                  topk_correct)
from dha_pipeline.preprocess import model_input
from dha_pipeline.recipe import DataConfig
from dha_pipeline.report.model_card import write_model_card
from dha_pipeline.report.plots import confusion_matrix
from dha_pipeline.scoring import split_logits

LATENCY_WARMUP = 3
LATENCY_BATCH = 32


@dataclass
class Evaluation:
    """The evaluation report, where it was written, and what the user should be warned of."""

    report: dict[str, Any]
    json_path: Path
    confusion_png: Path
    warnings: list[str] = field(default_factory=list)


def data_config_for(metadata: dict[str, Any], dataset: str | None, *, download: bool = False) -> DataConfig:
    """Dataset settings that reproduce the model's own splits on `dataset` (default: its training data)."""
    split = metadata.get("data", {}).get("split", {})
    return DataConfig(dataset=dataset or metadata["data"]["dataset"], image_size=metadata["input"]["size"],
                      channels=str(metadata["input"]["channels"]),
                      val_fraction=split.get("val_fraction", DataConfig.val_fraction),
                      test_fraction=split.get("test_fraction", DataConfig.test_fraction),
                      split_seed=split.get("split_seed", DataConfig.split_seed),
                      eval_crop=metadata["input"].get("crop", 1.0), download=download)


NAMED_CLASS_KINDS = ("imagefolder", "imagenet")
"""Dataset kinds whose class names are folder names: matched to the model's by name, never by position."""


def align_classes(data_classes: list[str], model_classes: list[str], dataset: str) -> tuple[np.ndarray, list[str]]:
    """The model's label for each of the data's labels, and the warnings to show.

    Classes are matched by name, so held-out data may hold any subset of the model's classes in any order.
    Data whose names the model does not know is an error when the names are folder names (imagefolder,
    imagenet); other sources with as many classes as the model (arrays with generic names) are matched by
    position, with a warning.
    """
    if all(name in model_classes for name in data_classes):
        return np.array([model_classes.index(name) for name in data_classes], dtype=np.int64), []
    unknown = [name for name in data_classes if name not in model_classes]
    if parse_spec(dataset)[0] in NAMED_CLASS_KINDS or len(data_classes) != len(model_classes):
        raise DhaError(f"dataset '{dataset}' has {len(data_classes)} classes but the model predicts "
                       f"{len(model_classes)}, and {len(unknown)} of the data's are not among them: "
                       f"{', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}",
                       "evaluate on the model's classes: " + ", ".join(model_classes[:20])
                       + (", ..." if len(model_classes) > 20 else ""))
    return np.arange(len(data_classes), dtype=np.int64), [
        f"the data's class names differ from the model's; labels are matched by index (data: {data_classes[:5]}..., "
        f"model: {model_classes[:5]}...)"]


def report_path(export: ExportLayout, model_path: Path, meta: dict[str, Any], dataset: str, split: str) -> Path:
    """Where a report goes without --out: the export's own (evaluation.json for the primary model) when it scores
    the model's own data, else beside it with the data and split in the name, so that scoring other data never
    replaces the run's own evaluation (`dha runs` reads it)."""
    own = export.evaluation_of(model_path)
    if dataset == meta.get("data", {}).get("dataset"):
        return own
    slug = re.sub(r"[^A-Za-z0-9]+", "_", dataset).strip("_")
    return own.with_name(f"{own.stem}.{slug}.{split}.json")


def measure_latency(backend: Backend, sample: np.ndarray, runs: int, *, warmup: int = LATENCY_WARMUP,
                    batch_runs: int | None = None) -> dict[str, float]:
    """Batch-1 p50/p90 of `runs` calls and batch-32 p50 of `batch_runs` calls (default `runs`), in
    milliseconds, each after `warmup` untimed calls; `sample` (model input) is repeated up to batch 32."""
    batch1 = call_milliseconds(lambda: backend(sample[:1]), runs, warmup)
    repeats = -(-LATENCY_BATCH // len(sample))
    batch = np.concatenate([sample] * repeats)[:LATENCY_BATCH]
    batch32 = call_milliseconds(lambda: backend(batch), batch_runs or runs, warmup)
    quantiles = statistics.quantiles(batch1, n=10) if len(batch1) > 1 else [batch1[0]] * 9
    return {"batch1_p50": statistics.median(batch1), "batch1_p90": quantiles[8],
            "batch32_p50": statistics.median(batch32)}


def evaluate_file(model_path: str | Path, *, dataset: str | None = None, split: str = "test",
                  batch_size: int = 256, latency_runs: int = 30, out: str | Path | None = None,
                  download: bool = False) -> Evaluation:
    """Evaluate a .onnx, .ts or .pt model on one split of `dataset` (default: the model's own training
    data), decoding only that split."""
    backend = load_backend(model_path)
    meta = backend.metadata
    config = data_config_for(meta, dataset, download=download)
    classes, source = build_split(config, split, image_size=meta["input"]["size"],
                                  channels=meta["input"]["channels"])
    return evaluate_model(model_path, source, dataset=config.dataset, split=split, classes=classes,
                          backend=backend, batch_size=batch_size, latency_runs=latency_runs, out=out)


def evaluate_model(model_path: str | Path, source: BatchSource, *, dataset: str, split: str, classes: list[str],
                   backend: Backend | None = None, batch_size: int = 256, latency_runs: int = 30,
                   out: str | Path | None = None) -> Evaluation:
    """Evaluate a model file on the images of `source` (uint8 at the model's size) and write the
    evaluation JSON and confusion PNG (and the model card, for an export's primary model)."""
    model_path = Path(model_path)
    backend = backend or load_backend(model_path)
    meta = backend.metadata
    model_classes = meta["classes"]
    label_map, warnings = align_classes(classes, model_classes, dataset)
    mean, std = meta["input"]["mean"], meta["input"]["std"]
    logits, labels = split_logits(backend, source, mean, std, len(model_classes), batch_size=batch_size,
                                  description=f"evaluating {split}")
    labels = label_map[labels]
    top1 = topk_correct(logits, labels, 1)
    top5 = {"top5": float(topk_correct(logits, labels, 5).mean())} if len(model_classes) > TOP5_ABOVE_CLASSES else {}
    predictions = logits.argmax(1)
    matrix = np.zeros((len(model_classes), len(model_classes)), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    per_class = per_class_mean(top1, labels, model_classes)
    latency = measure_latency(backend, model_input(first_images([source], LATENCY_BATCH), mean, std), latency_runs)
    report = {
        "model": str(model_path), "top1": float(top1.mean()), **top5, **class_balanced_scores(labels, predictions),
        "num_samples": int(len(labels)), "dataset": dataset, "split": split,
        "class_names_match": classes == model_classes, "backend": backend.name,
        "provider": backend.provider,
        "per_class_top1": per_class, "confusion_matrix": matrix.tolist(), "latency_ms": latency,
        "throughput_ips": LATENCY_BATCH / (latency["batch32_p50"] / 1000.0),
    }
    export = ExportLayout(model_path.parent)
    json_path = Path(out) if out else report_path(export, model_path, meta, dataset, split)
    png_path = export.confusion_of(json_path)
    write_json(json_path, report)
    confusion_matrix(matrix, model_classes, png_path, f"{meta['name']} on {dataset} ({split}), "
                                                      f"top-1 {100 * report['top1']:.2f}%")
    if json_path in (export.evaluation, export.evaluation_of_int8()) and "parity" in meta:
        write_model_card(export, meta)
    return Evaluation(report, json_path, png_path, warnings)
