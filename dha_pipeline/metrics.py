"""Small metric helpers: top-k accuracy, call timing, CSV history."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.fileio import write_text


def call_milliseconds(call: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Wall-clock milliseconds of `runs` calls of `call`, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append(1000.0 * (time.perf_counter() - started))
    return times


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean per sample: is the label among the k largest logits? For k = 1 a tie goes to the lower class
    index (argmax), as everywhere else in dha: int8 models produce exact ties."""
    if k == 1:
        return logits.argmax(1) == labels
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


TOP5_ABOVE_CLASSES = 5
"""Top-5 is reported only for models of more classes than this (with 5 or fewer it is always 100 %)."""


def class_balanced_scores(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (the mean recall over the classes present in `labels`) and macro-F1 over the same
    classes, by scikit-learn: what top-1 hides on imbalanced data. A class the model predicts but the data
    lacks counts against precision, not as a class of its own."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score, f1_score

    present = np.unique(labels)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": intended, see above
        warnings.simplefilter("ignore", UserWarning)
        balanced = balanced_accuracy_score(labels, predictions)
    return {"balanced_accuracy": float(balanced),
            "macro_f1": float(f1_score(labels, predictions, labels=present, average="macro", zero_division=0))}


def per_class_mean(correct: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """Class name -> mean of `correct` over that class's samples (None for a class with no sample)."""
    return {name: float(correct[labels == i].mean()) if (labels == i).any() else None
            for i, name in enumerate(classes)}


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Atomically write rows as CSV; columns are the union of the rows' keys, in first-seen order."""
    buffer = io.StringIO()
    if rows:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
        writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buffer.getvalue())

