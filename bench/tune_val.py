"""Tuning probes scored on the validation split only: prepare + search, never export or test.

Each probe is a variant of bench/variants.py plus extra `--set` lines, e.g.
`--probe "dha augment.magnitude_max=5"`. A row per (probe, seed) is appended to the CSV with
the final and best validation top-1 and the end state of what was learned (lr, wd, policy
entropy, genotype); rerunning skips rows already present. The test split is not read.

    python bench/tune_val.py recipes/cifar10_darts.toml --csv docs/results/cifar10_tuning.csv \\
        --probe dha --probe "dha augment.magnitude_max=5" [--seeds 0] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from variants import VARIANTS, append_row, measured, variant_recipe

from dha_pipeline import stages

COLUMNS = ("probe", "seed", "val_top1", "best_val_top1", "train_top1", "wall_s", "lr", "weight_decay",
           "policy_entropy", "top_pairs", "genotype")


def run_probe(recipe_path: Path, probe: str, seed: int, common: list[str], work_dir: Path,
              index: int) -> dict[str, object]:
    """Prepare and search one probe; its validation row."""
    variant, *extra = probe.split()
    recipe = variant_recipe(recipe_path, variant, seed, f"{recipe_path.stem}_probe{index}_s{seed}",
                            [*common, *extra], work_dir)
    started = time.perf_counter()
    stages.prepare(recipe)
    stages.search(recipe, force=True)
    wall = time.perf_counter() - started
    summary = json.loads(recipe.layout.summary.read_text())
    with open(recipe.layout.history, newline="") as handle:
        history = list(csv.DictReader(handle))
    pairs = list((summary.get("da_policy") or {}).items())[:3]
    return {"probe": probe, "seed": seed, "val_top1": float(history[-1]["val_top1"]),
            "best_val_top1": max(float(row["val_top1"]) for row in history),
            "train_top1": float(history[-1]["train_top1"]), "wall_s": round(wall, 1),
            "lr": summary["hyperparameters"]["lr"], "weight_decay": summary["hyperparameters"]["weight_decay"],
            "policy_entropy": history[-1].get("policy_entropy", ""),
            "top_pairs": " ".join(f"{pair}:{p:.3f}" for pair, p in pairs),
            "genotype": json.dumps(summary["genotype"], separators=(",", ":"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--probe", action="append", required=True, help="'VARIANT [KEY=VALUE ...]'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="common recipe override")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/dha_tuning"))
    args = parser.parse_args()
    named = [(probe.split() or ["''"])[0] for probe in args.probe]
    unknown = sorted({variant for variant in named if variant not in VARIANTS})
    if unknown:
        parser.error(f"unknown variant {', '.join(unknown)} in --probe; start each probe with one of "
                     f"{', '.join(VARIANTS)}")
    done = measured(args.csv, key="probe")
    for seed in args.seeds:
        for index, probe in enumerate(args.probe):
            if (probe, seed) in done:
                continue
            row = run_probe(args.recipe, probe, seed, args.overrides, args.work_dir, index)
            append_row(args.csv, row, COLUMNS)
            print(f"{probe} seed {seed}: val {row['val_top1']:.4f} (best {row['best_val_top1']:.4f}) "
                  f"train {row['train_top1']:.4f} {row['wall_s']} s", flush=True)


if __name__ == "__main__":
    main()
