"""Accuracy against measured latency, one figure per protocol, from bench/cifar10_equal_cost.py's CSV.

Every run is one point (test top-1 by onnxruntime against its batch-1 latency on one thread, and against
its parameters); the hand design at its widths (arms manual_small, manual, manual_large; mean over seeds)
is the line a searched network has to lie on or above.

    python bench/plot_equal_cost.py docs/results/equal_cost.csv --out docs/results
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from dha_pipeline.figures import pyplot, save_png

HAND = ("manual_small", "manual", "manual_large")
NAMES = {"A": "cell space, 1,000 images x 50 epochs", "B": "cell space, 500 x 150",
         "M": "MobileNet space, 1,000 x 50"}


AXES = (("latency_ms", "batch-1 latency, onnxruntime, 1 thread (ms)"), ("params", "parameters"))
"""The x axes, one panel each: the measured latency the issue asks for, and the parameter count (exact,
where this VM's latency moves by about +-30 % between runs of one network)."""


def plot(rows: list[dict[str, str]], protocol: str, path: Path) -> None:
    """One protocol's figure: test top-1 against latency (left) and against parameters (right)."""
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for axis, (column, label) in zip(axes, AXES, strict=True):
        by_arm: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for row in rows:
            by_arm[row["arm"]].append((float(row[column]), 100 * float(row["top1"])))
        hand = [(statistics.mean(x for x, _ in by_arm[arm]), statistics.mean(y for _, y in by_arm[arm]))
                for arm in HAND if by_arm.get(arm)]
        if hand:
            xs, ys = zip(*sorted(hand), strict=True)
            axis.plot(xs, ys, "-", color="0.4", label="hand design over widths (mean of seeds)")
        for arm, points in sorted(by_arm.items()):
            xs, ys = zip(*points, strict=True)
            axis.scatter(xs, ys, label=arm, marker="s" if arm in HAND else "o", s=28)
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Protocol {protocol}: {NAMES.get(protocol, protocol)}")
    fig.tight_layout()
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args()
    with open(args.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise SystemExit(f"error: '{args.csv}' has no rows; run bench/cifar10_equal_cost.py first")
    for protocol in sorted({row["protocol"] for row in rows}):
        path = args.out / f"equal_cost_{protocol}.png"
        plot([row for row in rows if row["protocol"] == protocol], protocol, path)
        print(path)


if __name__ == "__main__":
    main()
