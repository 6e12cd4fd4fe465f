"""Mean and spread per variant of a variants CSV (bench/variants.py): a Markdown table and a bar chart.

With `--paired dha`, a second table: that variant minus each other one, seed by seed (runs of one
seed share its random streams), and the ratio of their wall times over the seeds both have.
`--no-wall` leaves every wall-time column out, for a CSV whose rows were timed in different sessions
(bench/wall_costs.py compares those within a session); a row with an empty wall_s (a run whose time
was not taken alone) shows "-" where its wall time would count. A row is named as its run was (VARIANT, or
VARIANT:paper for the paper's augmentation form, prefixed by the space outside the cell space, as
mobilenet/dha); where the CSV records them, the mean final val
top-1 and the mean learned share p of augmented samples are shown too.

    python bench/summarize_variants.py docs/results/digits_variants.csv --png docs/results/digits_variants.png \
        --paired dha
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from dha_pipeline.fileio import write_with
from dha_pipeline.figures import pyplot


def run_label(row: dict[str, str]) -> str:
    """The run's name as bench/variants.py takes it: VARIANT, or VARIANT:paper for the paper's form; runs
    outside the cell space are prefixed by their space (mobilenet/dha)."""
    name = f"{row['variant']}:paper" if row.get("form") == "paper" else row["variant"]
    space = row.get("space") or "darts"
    return name if space == "darts" else f"{space}/{name}"


def _mean_of(rows: list[dict[str, str]], column: str, scale: float = 1.0) -> str:
    values = [scale * float(row[column]) for row in rows if row.get(column)]
    return f"{statistics.mean(values):.2f}" if values else "-"


def paired_table(rows: list[dict[str, str]], reference: str, with_wall: bool = True) -> list[str]:
    """Markdown rows of `reference` minus every other variant on the seeds both have, in points, and
    (`with_wall`) the ratio of their summed wall times."""
    top1 = {(row["variant"], int(row["seed"])): 100 * float(row["top1"]) for row in rows}
    wall = {(row["variant"], int(row["seed"])): float(row["wall_s"]) for row in rows if row.get("wall_s")}
    lines = [f"| {reference} minus | seeds | per seed (points) | mean | ahead / tied / behind |"
             + (" wall ratio |" if with_wall else ""), "|---|---|---|---|---|" + ("---|" if with_wall else "")]
    for variant in dict.fromkeys(row["variant"] for row in rows):
        seeds = sorted(seed for name, seed in top1 if name == variant and (reference, seed) in top1)
        if variant == reference or not seeds:
            continue
        gaps = [round(top1[reference, seed] - top1[variant, seed], 2) for seed in seeds]
        counts = (sum(g > 0 for g in gaps), sum(g == 0 for g in gaps), sum(g < 0 for g in gaps))
        timed = all((name, seed) in wall for name in (reference, variant) for seed in seeds)
        ratio = (f"{sum(wall[reference, seed] for seed in seeds) / sum(wall[variant, seed] for seed in seeds):.2f}"
                 if timed else "-")
        lines.append(f"| {variant} | {' '.join(map(str, seeds))} | {' / '.join(f'{g:+.2f}' for g in gaps)} "
                     f"| {statistics.mean(gaps):+.2f} | {' / '.join(map(str, counts))} |"
                     + (f" {ratio} |" if with_wall else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--paired", metavar="VARIANT", help="also print VARIANT minus each other variant, per seed")
    parser.add_argument("--no-wall", action="store_true", help="leave out the wall-time columns")
    args = parser.parse_args()
    with open(args.csv, newline="") as handle:
        rows = [{**row, "variant": run_label(row)} for row in csv.DictReader(handle)]
    extra = any(row.get("val_top1") or row.get("aug_fraction") for row in rows)
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    if args.paired and args.paired not in variants:
        parser.error(f"--paired {args.paired}: no such variant in {args.csv}; pick one of {', '.join(variants)}")
    stats = {}
    print("| variant | seeds | test top-1 (mean +- sd) | min | max | params |" + ("" if args.no_wall else " wall s |")
          + (" val top-1 | p |" if extra else ""))
    print("|---|---|---|---|---|---|" + ("" if args.no_wall else "---|") + ("---|---|" if extra else ""))
    for variant in variants:
        mine = [row for row in rows if row["variant"] == variant]
        top1 = [100 * float(row["top1"]) for row in mine]
        sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
        stats[variant] = (statistics.mean(top1), sd)
        params = statistics.mean(int(row["params"]) for row in mine)
        walls = [float(row["wall_s"]) for row in mine if row.get("wall_s")]
        wall = f"{statistics.mean(walls):.0f}" if walls else "-"
        print(f"| {variant} | {len(mine)} | {stats[variant][0]:.2f} +- {sd:.2f} | {min(top1):.2f} | {max(top1):.2f} "
              f"| {params:,.0f} |" + ("" if args.no_wall else f" {wall} |")
              + (f" {_mean_of(mine, 'val_top1', 100)} | {_mean_of(mine, 'aug_fraction')} |" if extra else ""))
    if args.paired:
        print("\n" + "\n".join(paired_table(rows, args.paired, with_wall=not args.no_wall)))
    if args.png:
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(7, 3.6))
        means = [stats[v][0] for v in variants]
        axis.bar(variants, means, yerr=[stats[v][1] for v in variants], capsize=4, color="steelblue")
        axis.set_ylim(max(min(means) - 5, 0), min(max(m + stats[v][1] for v, m in zip(variants, means)) + 3, 100))
        axis.set_ylabel("test top-1 (%)")
        axis.tick_params(axis="x", labelrotation=25)
        axis.set_title(f"{args.csv.stem}: mean +- sd over seeds (onnxruntime)")
        fig.tight_layout()
        write_with(args.png, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        plt.close(fig)


if __name__ == "__main__":
    main()
