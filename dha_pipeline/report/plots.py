"""PNG plots (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dha_pipeline.figures import pyplot, save_png

MAX_PANEL_COLUMNS = 7
"""Panels per row of the architecture-weights figure."""


def learning_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss and top-1 per epoch for train and val, and the learning rate."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("train_loss", "train"), ("val_loss", "val")):
        axes[0].plot(epochs, [row[key] for row in history], label=label)
    for key, label in (("train_top1", "train"), ("val_top1", "val")):
        axes[1].plot(epochs, [row[key] for row in history], label=label)
    axes[2].plot(epochs, [row["lr"] for row in history], label="base lr (eta)")
    axes[2].plot(epochs, [row["scheduled_lr"] for row in history], label="scheduled lr (end of epoch)")
    axes[2].set_yscale("log")
    axes[2].legend()
    for axis, title in zip(axes, ("loss", "top-1", "learning rate"), strict=True):
        axis.set_title(title)
        axis.set_xlabel("epoch")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    save_png(fig, path)


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: str | Path, title: str) -> None:
    """Row-normalized confusion matrix heatmap (rows: true class, columns: predicted)."""
    plt = pyplot()
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
    save_png(fig, path)


def policy_heatmap(probs: np.ndarray, op_names: list[str], path: str | Path, title: str) -> None:
    """Heatmap of the augmentation policy: K x K pair probabilities (rows: first op, columns: second op),
    or one row of K single-op probabilities."""
    plt = pyplot()
    pairs = probs.shape[0] > 1
    fig, axis = plt.subplots(figsize=(8, 7) if pairs else (8, 2.6))
    image = axis.imshow(probs, cmap="viridis")
    axis.set_xticks(range(len(op_names)), op_names, rotation=90)
    axis.set_yticks(range(len(op_names)) if pairs else [], op_names if pairs else [])
    axis.set_xlabel("second op" if pairs else "op")
    axis.set_ylabel("first op" if pairs else "")
    axis.set_title(title)
    fig.colorbar(image, ax=axis, fraction=0.046, label="probability")
    fig.tight_layout()
    save_png(fig, path)


def hyperparameter_trajectories(rows: list[dict[str, float]], path: str | Path) -> None:
    """eta per epoch (base learning rate and weight decay, log scale), the scheduled lr beside the base lr."""
    plt = pyplot()
    epochs = [row["epoch"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(epochs, [row["scheduled_lr"] for row in rows], color="gray", linestyle="--",
                 label="scheduled lr (end of epoch)")
    for axis, key, title in ((axes[0], "lr", "base learning rate (eta)"), (axes[1], "weight_decay", "weight decay")):
        axis.plot(epochs, [row[key] for row in rows], marker="o", markersize=3, label=title)
        axis.set_yscale("log")
        axis.set_title(title)
        axis.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def architecture_weights(history: dict[str, list[np.ndarray]], op_names: list[str], path: str | Path) -> None:
    """Per group and decision point: the largest |x| of each op (over the point's inputs), per epoch.

    `history[group]` is a list over epochs of arrays shaped (points, inputs, ops), padded with 0. Each group
    starts a new row of panels; a group of more than `MAX_PANEL_COLUMNS` points wraps onto further rows.
    """
    plt = pyplot()
    groups = list(history)
    columns = min(MAX_PANEL_COLUMNS, max(history[group][0].shape[0] for group in groups))
    rows_of = {group: -(-history[group][0].shape[0] // columns) for group in groups}
    fig, axes = plt.subplots(sum(rows_of.values()), columns, figsize=(3.2 * columns, 2.8 * sum(rows_of.values())),
                             squeeze=False)
    first_row = 0
    for group in groups:
        stacked = np.abs(np.stack(history[group]))  # epochs, points, inputs, ops
        epochs = np.arange(1, len(stacked) + 1)
        for index in range(rows_of[group] * columns):
            axis = axes[first_row + index // columns][index % columns]
            if index >= stacked.shape[1]:
                axis.axis("off")
                continue
            for op, name in enumerate(op_names):
                axis.plot(epochs, stacked[:, index, :, op].max(axis=1), label=name)
            axis.set_title(f"{group} {index}")
            axis.set_xlabel("epoch")
        first_row += rows_of[group]
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    save_png(fig, path)


def benchmark_scatter(points: list[tuple[str, float, float]], path: str | Path, title: str) -> None:
    """Top-1 (%) against batch-1 latency (ms), one labelled point per (label, latency, top-1)."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.2))
    for label, latency, top1 in points:
        axis.scatter(latency, top1)
        axis.annotate(label, (latency, top1), fontsize=8, textcoords="offset points", xytext=(5, 4))
    axis.set_xlabel("batch-1 latency, median (ms)")
    axis.set_ylabel("top-1 (%)")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)
