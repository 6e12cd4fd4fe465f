"""PNG plots (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dha_pipeline.fileio import write_with


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss and top-1 per epoch for train and val, and the learning rate."""
    plt = pyplot()
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
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def policy_heatmap(probs: np.ndarray, op_names: list[str], path: str | Path, title: str) -> None:
    """K x K heatmap of the augmentation-pair probabilities (rows: first op, columns: second op)."""
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(8, 7))
    image = axis.imshow(probs, cmap="viridis")
    axis.set_xticks(range(len(op_names)), op_names, rotation=90)
    axis.set_yticks(range(len(op_names)), op_names)
    axis.set_xlabel("second op")
    axis.set_ylabel("first op")
    axis.set_title(title)
    fig.colorbar(image, ax=axis, fraction=0.046, label="probability")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def hyperparameter_trajectories(rows: list[dict[str, float]], path: str | Path) -> None:
    """Learning rate and weight decay per epoch (log scale)."""
    plt = pyplot()
    epochs = [row["epoch"] for row in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, key, title in ((axes[0], "lr", "learning rate"), (axes[1], "weight_decay", "weight decay")):
        axis.plot(epochs, [row[key] for row in rows], marker="o", markersize=3)
        axis.set_yscale("log")
        axis.set_title(title)
        axis.set_xlabel("epoch")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def architecture_weights(history: dict[str, list[np.ndarray]], op_names: list[str], path: str | Path) -> None:
    """Per cell type and node: the largest |x| of each op (over the node's input edges), per epoch.

    `history[cell_type]` is a list over epochs of arrays shaped (nodes, inputs, ops), padded with 0.
    """
    plt = pyplot()
    cell_types = list(history)
    nodes = history[cell_types[0]][0].shape[0]
    fig, axes = plt.subplots(len(cell_types), nodes, figsize=(3.2 * nodes, 2.8 * len(cell_types)), squeeze=False)
    for row, cell_type in enumerate(cell_types):
        stacked = np.abs(np.stack(history[cell_type]))  # epochs, nodes, inputs, ops
        epochs = np.arange(1, len(stacked) + 1)
        for node in range(nodes):
            axis = axes[row][node]
            for op, name in enumerate(op_names):
                axis.plot(epochs, stacked[:, node, :, op].max(axis=1), label=name)
            axis.set_title(f"{cell_type} node {node}")
            axis.set_xlabel("epoch")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def cell_diagrams(genotype: dict[str, list], path: str | Path) -> None:
    """The normal and reduction cells as graphs: inputs, 4 nodes, output; edges labeled by op."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for axis, cell_type in zip(axes, ("normal", "reduce"), strict=True):
        edges = genotype[cell_type]
        nodes = len(edges) // 2
        positions = {0: (0.0, 1.0), 1: (0.0, -1.0)}
        positions.update({2 + i: (1.0 + i, 0.9 if i % 2 else -0.9) for i in range(nodes)})
        positions[-1] = (nodes + 1.0, 0.0)
        labels = {0: "c_{k-2}", 1: "c_{k-1}", -1: "c_{k}"}
        labels.update({2 + i: str(i) for i in range(nodes)})
        for position, (op, source) in enumerate(edges):
            target = 2 + position // 2
            (x0, y0), (x1, y1) = positions[source], positions[target]
            bend = 0.25 if position % 2 else -0.25
            axis.annotate("", xy=(x1, y1), xytext=(x0, y0),
                          arrowprops={"arrowstyle": "->", "color": "gray", "connectionstyle": f"arc3,rad={bend}"})
            # the point halfway along matplotlib's arc3 Bezier curve
            label_x = (x0 + x1) / 2 + 0.5 * bend * (y1 - y0)
            label_y = (y0 + y1) / 2 - 0.5 * bend * (x1 - x0)
            axis.text(label_x, label_y, op, fontsize=7, ha="center", va="center", color="darkblue",
                      bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        for node in range(nodes):
            (x0, y0), (x1, y1) = positions[2 + node], positions[-1]
            axis.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "lightgray"})
        for key, (x, y) in positions.items():
            axis.text(x, y, labels[key], ha="center", va="center", fontsize=9,
                      bbox={"boxstyle": "round", "facecolor": "lightyellow" if key in (0, 1, -1) else "lightblue"})
        axis.set_xlim(-0.6, nodes + 1.6)
        axis.set_ylim(-1.6, 1.6)
        axis.set_title(f"{cell_type} cell")
        axis.axis("off")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
