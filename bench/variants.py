"""The DHA-vs-baselines protocol: every variant x seed through the whole pipeline, one row each.

Each (variant, seed) is a full `dha run` of the base recipe with the variant's `--set` lines
(docs/VARIANTS.md): search, derive, parity-gated export, then the test split evaluated exactly
once by onnxruntime on the exported model; the derived torch child is scored on the same split
for `torch_top1`. Rows are appended to the CSV as they finish, so an interrupted protocol keeps
what it measured; rerunning skips rows already present.

    python bench/variants.py recipes/digits_quickstart.toml --csv docs/results/digits_variants.csv \\
        --seeds 0 1 2 [--set KEY=VALUE ...] [--variants dha nas_only ...] [--work-dir /tmp/dha_variants]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from dha_pipeline import stages
from dha_pipeline.data.cache import load_cache
from dha_pipeline.evaluate import evaluate_model
from dha_pipeline.recipe import Recipe

VARIANTS: dict[str, list[str]] = {
    "manual": ["search.mode=manual", "search.components=[]"],
    "nas_only": ["search.mode=joint", 'search.components=["nas"]'],
    "nas_da": ["search.mode=joint", 'search.components=["nas","da"]'],
    "nas_hpo": ["search.mode=joint", 'search.components=["nas","hpo"]'],
    "sequential": ["search.mode=sequential", 'search.components=["nas","da","hpo"]'],
    "dha": ["search.mode=joint", 'search.components=["nas","da","hpo"]'],
}
COLUMNS = ("variant", "seed", "top1", "top5", "wall_s", "params", "macs", "onnx_top1", "torch_top1")


def measured(csv_path: Path, key: str = "variant") -> set[tuple[str, int]]:
    """(key column, seed) pairs already in the CSV."""
    if not csv_path.is_file():
        return set()
    with open(csv_path, newline="") as handle:
        return {(row[key], int(row["seed"])) for row in csv.DictReader(handle)}


def variant_recipe(recipe_path: Path, variant: str, seed: int, name: str, overrides: list[str],
                   work_dir: Path) -> Recipe:
    """The recipe of one run: `overrides`, then the variant's lines, seed and name, outputs under work_dir."""
    return stages.resolve_recipe(recipe_path, [*overrides, *VARIANTS[variant], f"seed={seed}", f"name={name}",
                                               f"runs_dir={json.dumps(str(work_dir / 'runs'))}",
                                               f"exports_dir={json.dumps(str(work_dir / 'exports'))}"])


def run_one(recipe_path: Path, variant: str, seed: int, extra: list[str], work_dir: Path) -> dict[str, object]:
    """One full pipeline run; returns its CSV row."""
    name = f"{recipe_path.stem}_{variant}_s{seed}"
    recipe = variant_recipe(recipe_path, variant, seed, name, extra, work_dir)
    started = time.perf_counter()
    stages.run_all(recipe, force=True)
    wall = time.perf_counter() - started
    layout = recipe.layout
    onnx_report = json.loads(layout.exports.evaluation.read_text())
    metadata = json.loads(layout.exports.metadata.read_text())
    split = recipe.evaluate.split
    data = load_cache(layout.cache, (split,))
    torch_report = evaluate_model(layout.child, data.source(split), dataset=recipe.data.dataset, split=split,
                                  classes=data.classes, latency_runs=1,
                                  out=work_dir / f"{name}.torch_evaluation.json")
    return {"variant": variant, "seed": seed, "top1": onnx_report["top1"], "top5": onnx_report["top5"],
            "wall_s": round(wall, 1), "params": metadata["params"], "macs": metadata["macs"],
            "onnx_top1": onnx_report["top1"], "torch_top1": torch_report.report["top1"]}


def append_row(csv_path: Path, row: dict[str, object], columns: tuple[str, ...] = COLUMNS) -> None:
    """Append one row, writing the header for a new file."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new = not csv_path.is_file()
    with open(csv_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_protocol(recipe: Path, csv_path: Path, seeds: list[int], variants: list[str], overrides: list[str],
                 work_dir: Path) -> None:
    """Every variant x seed not yet in the CSV, seed-major (all variants get seed 0 first)."""
    done = measured(csv_path)
    for seed in seeds:
        for variant in variants:
            if (variant, seed) in done:
                continue
            row = run_one(recipe, variant, seed, overrides, work_dir)
            append_row(csv_path, row)
            print(",".join(str(row[c]) for c in COLUMNS), flush=True)


def retime_rows(recipe: Path, csv_path: Path, pairs: list[tuple[str, int]], overrides: list[str],
                work_dir: Path) -> None:
    """Rerun measured (variant, seed) rows and replace only their wall_s, after checking that the rerun
    reproduces every other column; a row that does not reproduce is left as it was and reported."""
    for variant, seed in pairs:
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        old = next((row for row in rows if row["variant"] == variant and int(row["seed"]) == seed), None)
        if old is None:
            raise SystemExit(f"error: {variant} seed {seed} is not in {csv_path}; measure it first (no --retime)")
        new = run_one(recipe, variant, seed, overrides, work_dir)
        changed = [c for c in COLUMNS if c not in ("wall_s",) and str(new[c]) != old[c]]
        if changed:
            diffs = ", ".join(f"{c}: {old[c]} -> {new[c]}" for c in changed)
            print(f"{variant} seed {seed} did NOT reproduce ({diffs}); row left unchanged", flush=True)
            continue
        print(f"{variant} seed {seed} reproduced; wall_s {old['wall_s']} -> {new['wall_s']}", flush=True)
        old["wall_s"] = str(new["wall_s"])
        tmp = csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(csv_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra recipe override")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/dha_variants"))
    args = parser.parse_args()
    run_protocol(args.recipe, args.csv, args.seeds, args.variants, args.overrides, args.work_dir)


if __name__ == "__main__":
    main()
