"""Helpers shared by the benchmark scripts: synthetic data and interleaved timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from dha_pipeline.data.batches import ArraySource
from dha_pipeline.data.cache import PreparedData


def synthetic_data(n: int, size: int, channels: int = 3, classes: int = 10, seed: int = 0) -> PreparedData:
    """Random uint8 images in every split, shaped like a cached dataset."""
    rng = np.random.default_rng(seed)
    sources = {split: ArraySource(rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8),
                                  rng.integers(0, classes, n).astype(np.int64)) for split in ("train", "val", "test")}
    manifest = {"dataset": "synthetic", "split": {}, "channels": channels, "image_size": size,
                "classes": [str(c) for c in range(classes)], "mean": [0.5] * channels, "std": [0.25] * channels}
    return PreparedData(manifest, dict(sources))


def interleaved_medians(candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 2
                        ) -> dict[str, float]:
    """Median seconds per call of each candidate, timed round-robin so drifts hit all alike."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            started = time.perf_counter()
            fn()
            if torch.cuda.is_initialized():  # GPU work is asynchronous: count it, not just its launch
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
