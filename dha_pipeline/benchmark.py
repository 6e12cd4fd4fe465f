"""`dha benchmark`: every format of an export, reloaded through the same front end and measured alike.

Each model file present (and the derived child as torch eager, when its file is still where export
found it) is loaded by its backend, scored on one split with the preprocessing of the export's metadata,
and timed on real images: batch 1 (warm-up, then the median and p90 of many calls) and batch 32 (median,
as images per second). torch and onnxruntime are held to the same number of threads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.data.batches import BatchSource, first_images
from dha_pipeline.data.cache import build_split
from dha_pipeline.errors import CheckFailed, DhaError
from dha_pipeline.evaluate import LATENCY_BATCH, align_classes, data_config_for, measure_latency
from dha_pipeline.fileio import write_json
from dha_pipeline.formats.base import Backend, Runtime
from dha_pipeline.formats.onnx_runtime import onnx_providers
from dha_pipeline.formats.registry import FORMATS
from dha_pipeline.layout import ExportLayout
from dha_pipeline.metrics import class_balanced_scores, per_class_mean, topk_correct, write_csv
from dha_pipeline.preprocess import model_input
from dha_pipeline.report.model_card import write_model_card
from dha_pipeline.report.plots import benchmark_scatter
from dha_pipeline.scoring import split_logits

MIN_RUNS = 50
WARMUP_RUNS = 10
THROUGHPUT_BATCH = LATENCY_BATCH


@dataclass(frozen=True)
class BenchmarkRow:
    """One format, measured."""

    format: str
    label: str
    file: str
    size_mb: float
    backend: str
    provider: str
    threads: int
    top1: float
    balanced_accuracy: float
    macro_f1: float
    batch1_p50_ms: float
    batch1_p90_ms: float
    batch32_images_per_s: float
    runs: int
    split: str
    num_samples: int
    machine: str


def present_models(layout: ExportLayout, metadata: dict[str, Any]) -> dict[str, Path]:
    """Format -> file for every model file in the export folder, and the derived child (named in the metadata)
    when it exists, in table order (formats.registry.FORMATS)."""
    child = Path(metadata["child"]) if metadata.get("child") else None  # the one format outside the folder
    found = {}
    for name, record in FORMATS.items():
        path = layout.model(name) if record.in_export else child
        if path is not None and path.is_file():
            found[name] = path
    return found


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` for the block."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_backend(backend: Backend, sample: np.ndarray, runs: int) -> tuple[float, float, float]:
    """Batch-1 median and p90 milliseconds of `runs` calls, and batch-32 images per second (median of
    max(10, runs / 5) calls), each after a warm-up; `sample` is float32 NCHW model input."""
    latency = measure_latency(backend, sample, runs, warmup=WARMUP_RUNS, batch_runs=max(10, runs // 5))
    return latency["batch1_p50"], latency["batch1_p90"], THROUGHPUT_BATCH / (latency["batch32_p50"] / 1000.0)


def benchmark_export(export_dir: str | Path, *, dataset: str | None = None, split: str = "test", runs: int = 100,
                     threads: int | None = None, provider: str | None = None, download: bool = False
                     ) -> list[BenchmarkRow]:
    """Measure every format of an export on one split of `dataset` (default: the model's own data) with
    `threads` threads (default: every core), write benchmark.csv, benchmark.json (with top-1 per class)
    and benchmark.png into the export folder and rebuild its model card."""
    from dha_pipeline.latency import machine_name
    from dha_pipeline.progress import log_line

    layout = ExportLayout(Path(export_dir))
    if not layout.metadata.is_file():
        raise DhaError(f"'{export_dir}' is not an export folder (no metadata.json)",
                       "pass exports/<name>/, written by `dha export`")
    if runs < MIN_RUNS:
        raise DhaError(f"--runs {runs} is too few for a median and p90", f"use --runs {MIN_RUNS} or more")
    threads = threads or os.cpu_count() or 1
    if provider is not None:
        onnx_providers(provider)  # an unknown provider fails before anything is measured
    metadata = json.loads(layout.metadata.read_text())
    models = present_models(layout, metadata)
    if not models:
        raise DhaError(f"export folder '{export_dir}' holds no model file", "run `dha export` first")
    spec = metadata["input"]
    config = data_config_for(metadata, dataset, download=download)
    classes, source = build_split(config, split, image_size=spec["size"], channels=spec["channels"])
    label_map, warnings = align_classes(classes, metadata["classes"], config.dataset)
    for warning in warnings:
        log_line(f"warning: {warning}")
    sample = model_input(first_images([source], THROUGHPUT_BATCH), spec["mean"], spec["std"])
    machine = machine_name()
    rows, per_class = [], {}
    with torch_threads(threads):
        for fmt, path in models.items():
            backend = FORMATS[fmt].load(path, Runtime(provider, threads))
            row, per_class[fmt] = _measure(fmt, path, backend, source, label_map, metadata, sample, runs, threads,
                                           split, machine)
            rows.append(row)
            log_line(f"benchmark {FORMATS[fmt].label}: top-1 {100 * rows[-1].top1:.2f}%, batch 1 "
                     f"{rows[-1].batch1_p50_ms:.3f} ms")
    write_csv(layout.benchmark_csv, [asdict(row) for row in rows])
    write_json(layout.benchmark_json, {"dataset": config.dataset, "split": split, "rows": [asdict(row) for row in rows],
                                       "per_class_top1": per_class})
    benchmark_scatter([(f"{row.label}, {row.size_mb:.2f} MB", row.batch1_p50_ms, 100 * row.top1) for row in rows],
                      layout.benchmark_png, f"{metadata['name']}: {config.dataset} ({split}), {threads} threads")
    write_model_card(layout)
    return rows


def _measure(fmt: str, path: Path, backend: Backend, source: BatchSource, label_map: np.ndarray,
             metadata: dict[str, Any], sample: np.ndarray, runs: int, threads: int, split: str, machine: str
             ) -> tuple[BenchmarkRow, dict[str, float | None]]:
    """One format's row, and its top-1 per class (None for a class absent from the split); `label_map` takes
    the data's labels to the model's."""
    spec = metadata["input"]
    logits, labels = split_logits(backend, source, spec["mean"], spec["std"], len(metadata["classes"]),
                                  description=f"scoring {FORMATS[fmt].label}")
    labels = label_map[labels]
    correct = topk_correct(logits, labels, 1)
    per_class = per_class_mean(correct, labels, metadata["classes"])
    balanced = class_balanced_scores(labels, logits.argmax(1))
    p50, p90, throughput = time_backend(backend, sample, runs)
    return BenchmarkRow(fmt, FORMATS[fmt].label, path.name, path.stat().st_size / 1e6, backend.name,
                        backend.provider, threads, float(correct.mean()), balanced["balanced_accuracy"],
                        balanced["macro_f1"], p50, p90, throughput, runs, split, int(len(labels)), machine), per_class


def enforce_min_top1(rows: list[BenchmarkRow], floor: float) -> None:
    """Raise CheckFailed (exit 1) naming every format whose top-1 is below `floor` (a fraction)."""
    below = [f"{row.label} {100 * row.top1:.2f}%" for row in rows if row.top1 < floor]
    if below:
        raise CheckFailed(f"top-1 below --min-top1 {floor:g} ({100 * floor:.2f}%): {', '.join(below)}",
                          "retrain or re-export the model, or lower the floor")
