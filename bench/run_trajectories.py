"""What each protocol run learned, read back from its run folder: a Markdown table, one row per run.

For every `<runs>/<name>/` with a finished search: validation and training top-1 at the last
epoch (training top-1 is on augmented images), the best validation top-1, the learned base
learning rate (eta, as history.csv logs it) over the recipe's at 90% of the run, the parameter-free
edges (pooling, skip) of the normal cell (cell-space runs), the derived network's parameters, and
the policy's most likely op pair.

    python bench/run_trajectories.py /tmp/dha_cifar10/runs
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from dha_pipeline import stages
from dha_pipeline.layout import RunLayout

PARAMETER_FREE = {"max_pool_3x3", "avg_pool_3x3", "skip_connect"}


def trajectory_row(run_dir: Path) -> str:
    """One Markdown row for the run in `run_dir`."""
    layout = RunLayout.of(run_dir.parent, "exports", run_dir.name)
    summary = json.loads(layout.summary.read_text())
    with open(layout.history, newline="") as handle:
        history = list(csv.DictReader(handle))
    last, late = history[-1], history[9 * len(history) // 10 - 1]
    recipe_lr = stages.resolve_recipe(run_dir).train.lr
    normal = summary["genotype"].get("normal")
    free = "-" if normal is None else f"{sum(op in PARAMETER_FREE for op, _ in normal)}/{len(normal)}"
    pair = next(iter(summary.get("da_policy") or {}), "-")
    return (f"| {run_dir.name} | {100 * float(last['val_top1']):.1f} "
            f"| {100 * max(float(row['val_top1']) for row in history):.1f} | {100 * float(last['train_top1']):.1f} "
            f"| {float(late['lr']) / recipe_lr:.2f} | {free} | {summary['params']:,} | {pair} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the runs/ folder of a protocol work dir")
    args = parser.parse_args()
    run_dirs = sorted(path.parent.parent for path in args.runs.glob("*/search/summary.json"))
    if not run_dirs:
        parser.error(f"no finished runs under '{args.runs}' (expected <name>/search/summary.json)")
    print("| run | val top-1 last | val best | train top-1 last | learned lr / recipe lr (90% of run) "
          "| parameter-free normal edges | params | top policy pair |")
    print("|---|---|---|---|---|---|---|---|")
    for run_dir in run_dirs:
        print(trajectory_row(run_dir))


if __name__ == "__main__":
    main()
