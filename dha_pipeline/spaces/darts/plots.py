"""The picture of a DARTS genotype: its normal and reduction cells as graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dha_pipeline.figures import pyplot, save_png


def cell_diagrams(genotype: dict[str, Any], path: str | Path) -> None:
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
    save_png(fig, path)
