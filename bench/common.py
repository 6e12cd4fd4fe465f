"""Helpers shared by the benchmark scripts: synthetic data and interleaved timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from dha_pipeline.data.cache import PreparedData


def synthetic_data(n: int, size: int, channels: int = 3, classes: int = 10, seed: int = 0) -> PreparedData:
    """Random uint8 images in every split, shaped like a cached dataset."""
    rng = np.random.default_rng(seed)
    x = {split: rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8) for split in ("train", "val", "test")}
    y = {split: rng.integers(0, classes, n).astype(np.int64) for split in x}
    manifest = {"dataset": "synthetic", "split": {}, "channels": channels, "image_size": size}
    return PreparedData([str(c) for c in range(classes)], x, y, [0.5] * channels, [0.25] * channels, manifest)


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
