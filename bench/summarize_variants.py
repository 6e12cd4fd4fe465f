"""Mean and spread per variant of a variants CSV (bench/variants.py): a Markdown table and a bar chart.

    python bench/summarize_variants.py docs/results/digits_variants.csv --png docs/results/digits_variants.png
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from dha_pipeline.fileio import write_with
from dha_pipeline.report.plots import pyplot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    with open(args.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    stats = {}
    print("| variant | seeds | test top-1 (mean +- sd) | min | max | params | wall s |")
    print("|---|---|---|---|---|---|---|")
    for variant in variants:
        mine = [row for row in rows if row["variant"] == variant]
        top1 = [100 * float(row["top1"]) for row in mine]
        sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
        stats[variant] = (statistics.mean(top1), sd)
        params = statistics.mean(int(row["params"]) for row in mine)
        wall = statistics.mean(float(row["wall_s"]) for row in mine)
        print(f"| {variant} | {len(mine)} | {stats[variant][0]:.2f} +- {sd:.2f} | {min(top1):.2f} | {max(top1):.2f} "
              f"| {params:,.0f} | {wall:.0f} |")
    if args.png:
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(7, 3.6))
        means = [stats[v][0] for v in variants]
        axis.bar(variants, means, yerr=[stats[v][1] for v in variants], capsize=4, color="steelblue")
        axis.set_ylim(max(min(means) - 5, 0), min(max(m + stats[v][1] for v, m in zip(variants, means)) + 3, 100))
        axis.set_ylabel("test top-1 (%)")
        axis.set_title(f"{args.csv.stem}: mean +- sd over seeds (onnxruntime)")
        fig.tight_layout()
        write_with(args.png, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        plt.close(fig)


if __name__ == "__main__":
    main()
