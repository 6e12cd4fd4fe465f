"""The picture of a MobileNet-space genotype: one box per searchable layer, kernel and expansion shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dha_pipeline.figures import pyplot, save_png
from dha_pipeline.spaces.mobilenet.blocks import EXPANSIONS, KERNELS, SKIP, parse_choice

BOX_WIDTH = 0.8


def layer_boxes(genotype: dict[str, Any], path: str | Path) -> None:
    """Each layer as a box left to right: height grows with the kernel, colour with the expansion, the
    label names both ('k5 e6'); a skipped layer is a dashed outline."""
    plt = pyplot()
    from matplotlib.patches import Rectangle

    layers = list(genotype["layers"])
    fig, axis = plt.subplots(figsize=(max(6.0, 0.55 * len(layers) + 1.5), 3.2))
    colours = dict(zip(EXPANSIONS, ("#9ecae1", "#3182bd"), strict=True))
    for index, choice in enumerate(layers):
        if choice == SKIP:
            axis.add_patch(Rectangle((index - BOX_WIDTH / 2, -0.3), BOX_WIDTH, 0.6, fill=False, linestyle="--",
                                     edgecolor="gray"))
            axis.text(index, 0.0, "skip", ha="center", va="center", fontsize=7, color="gray", rotation=90)
            continue
        kernel, expansion = parse_choice(choice)
        height = 0.6 + 0.4 * KERNELS.index(kernel)
        axis.add_patch(Rectangle((index - BOX_WIDTH / 2, -height / 2), BOX_WIDTH, height,
                                 facecolor=colours[expansion], edgecolor="black", linewidth=0.6))
        axis.text(index, 0.0, f"k{kernel}\ne{expansion}", ha="center", va="center", fontsize=7,
                  color="white" if expansion == max(EXPANSIONS) else "black")
    axis.set_xlim(-0.7, len(layers) - 0.3)
    axis.set_ylim(-1.1, 1.1)
    axis.set_yticks([])
    axis.set_xticks(range(len(layers)))
    axis.set_xlabel("searchable layer (box height: kernel 3/5/7; dark: expansion 6, light: 3)")
    axis.set_title(f"MobileNet-space child: {len(layers) - layers.count(SKIP)} MBConv layers, "
                   f"{layers.count(SKIP)} skipped")
    fig.tight_layout()
    save_png(fig, path)
