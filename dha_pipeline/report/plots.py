"""PNG plots (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dha_pipeline.fileio import write_with


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss and top-1 per epoch for train and val, and the learning rate."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        axes[0].plot(epochs, [row[key] for row in history], label=label)
    for key, label in (("train_top1", "train"), ("val_top1", "val")):
        axes[1].plot(epochs, [row[key] for row in history], label=label)
    axes[2].plot(epochs, [row["lr"] for row in history])
    for axis, title in zip(axes, ("loss", "top-1", "learning rate (end of epoch)"), strict=True):
        axis.set_title(title)
        axis.set_xlabel("epoch")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: str | Path, title: str) -> None:
    """Row-normalized confusion matrix heatmap (rows: true class, columns: predicted)."""
    plt = _pyplot()
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = min(4 + 0.35 * len(classes), 30)
    fig, axis = plt.subplots(figsize=(side, side * 0.85))
    image = axis.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 40:
        axis.set_xticks(range(len(classes)), classes, rotation=90)
        axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    fig.colorbar(image, ax=axis, fraction=0.046)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
