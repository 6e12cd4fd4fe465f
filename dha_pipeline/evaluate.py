"""Evaluate a model file on held-out data: accuracy, per-class accuracy, confusion matrix, latency.

Preprocessing comes from the model's own metadata and uses the same functions
as training (`prepare_image`, `model_input`), so a model file alone is enough.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.backends import Backend, load_backend
from dha_pipeline.data.cache import build_dataset
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json, write_text
from dha_pipeline.metrics import topk_correct
from dha_pipeline.preprocess import model_input
from dha_pipeline.progress import console, progress_bar
from dha_pipeline.recipe import DataConfig
from dha_pipeline.report.model_card import model_card
from dha_pipeline.report.plots import confusion_matrix

LATENCY_WARMUP = 3
LATENCY_BATCH = 32


@dataclass
class Evaluation:
    """The evaluation report and where it was written."""

    report: dict[str, Any]
    json_path: Path
    confusion_png: Path


def data_config_for(metadata: dict[str, Any], dataset: str | None, *, download: bool = False) -> DataConfig:
    """Dataset settings that reproduce the model's own splits on `dataset` (default: its training data)."""
    split = metadata.get("data", {}).get("split", {})
    return DataConfig(dataset=dataset or metadata["data"]["dataset"], image_size=metadata["input"]["size"],
                      channels=str(metadata["input"]["channels"]),
                      val_fraction=split.get("val_fraction", DataConfig.val_fraction),
                      test_fraction=split.get("test_fraction", DataConfig.test_fraction),
                      split_seed=split.get("split_seed", DataConfig.split_seed), download=download)


def measure_latency(backend: Backend, sample: np.ndarray, runs: int) -> dict[str, float]:
    """Batch-1 p50/p90 and batch-32 p50 wall-clock latency in milliseconds."""
    def timed(batch: np.ndarray) -> list[float]:
        for _ in range(LATENCY_WARMUP):
            backend(batch)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            backend(batch)
            times.append(1000.0 * (time.perf_counter() - started))
        return times

    batch1 = timed(sample[:1])
    repeats = -(-LATENCY_BATCH // len(sample))
    batch32 = timed(np.concatenate([sample] * repeats)[:LATENCY_BATCH])
    quantiles = statistics.quantiles(batch1, n=10) if len(batch1) > 1 else [batch1[0]] * 9
    return {"batch1_p50": statistics.median(batch1), "batch1_p90": quantiles[8],
            "batch32_p50": statistics.median(batch32)}


def evaluate_model(model_path: str | Path, *, dataset: str | None = None, split: str = "test",
                   batch_size: int = 256, latency_runs: int = 30, out: str | Path | None = None,
                   download: bool = False) -> Evaluation:
    """Evaluate a .onnx, .ts or .pt model on a split of `dataset` and write evaluation JSON and PNG."""
    model_path = Path(model_path)
    backend = load_backend(model_path)
    meta = backend.metadata
    classes = meta["classes"]
    data = build_dataset(data_config_for(meta, dataset, download=download),
                         image_size=meta["input"]["size"], channels=meta["input"]["channels"])
    if len(data.classes) != len(classes):
        raise DhaError(f"dataset '{data.manifest['dataset']}' has {len(data.classes)} classes but the model "
                       f"predicts {len(classes)}",
                       "evaluate on data with the model's classes: " + ", ".join(classes[:20]))
    if data.classes != classes:
        console.print(f"[yellow]warning:[/yellow] the data's class names differ from the model's; labels are "
                      f"matched by index (data: {data.classes[:5]}..., model: {classes[:5]}...)", highlight=False)
    images, labels = data.x[split], data.y[split]
    logits = np.empty((len(images), len(classes)), dtype=np.float32)
    with progress_bar() as progress:
        task = progress.add_task(f"evaluating {split}", total=len(images))
        for start in range(0, len(images), batch_size):
            batch = model_input(images[start:start + batch_size], meta["input"]["mean"], meta["input"]["std"])
            logits[start:start + len(batch)] = backend(batch)
            progress.advance(task, len(batch))
    top1 = topk_correct(logits, labels, 1)
    top5 = topk_correct(logits, labels, 5)
    predictions = logits.argmax(1)
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    per_class = {name: float(top1[labels == i].mean()) if (labels == i).any() else None
                 for i, name in enumerate(classes)}
    latency = measure_latency(backend, model_input(images[:LATENCY_BATCH], meta["input"]["mean"],
                                                   meta["input"]["std"]), latency_runs)
    report = {
        "model": str(model_path), "top1": float(top1.mean()), "top5": float(top5.mean()),
        "num_samples": int(len(labels)), "dataset": data.manifest["dataset"], "split": split,
        "class_names_match": data.classes == classes, "backend": backend.name,
        "provider": getattr(backend, "provider", "cpu"),
        "per_class_top1": per_class, "confusion_matrix": matrix.tolist(), "latency_ms": latency,
        "throughput_ips": LATENCY_BATCH / (latency["batch32_p50"] / 1000.0),
    }
    default_name = "evaluation.json" if model_path.name == "model.onnx" else f"evaluation.{model_path.name}.json"
    json_path = Path(out) if out else model_path.parent / default_name
    png_path = json_path.with_suffix(".confusion.png")
    write_json(json_path, report)
    confusion_matrix(matrix, classes, png_path, f"{meta['name']} on {report['dataset']} ({split}), "
                                                 f"top-1 {100 * report['top1']:.2f}%")
    card = model_path.parent / "MODEL_CARD.md"
    if model_path.name == "model.onnx" and "parity" in meta and not out:
        write_text(card, model_card(meta, report))
    return Evaluation(report, json_path, png_path)
