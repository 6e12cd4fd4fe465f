"""The DHA-vs-baselines protocol: every variant x seed through the whole pipeline, one row each.

Each (variant, seed) is a full `dha run` of the base recipe with the variant's `--set` lines
(docs/VARIANTS.md): search, derive, parity-gated export, then the test split evaluated exactly
once by onnxruntime on the exported model; the derived torch child is scored on the same split
for `torch_top1`. Rows are appended to the CSV as they finish, so an interrupted protocol keeps
what it measured; rerunning skips rows already present.

A run is VARIANT or VARIANT:FORM. FORM (`learned_fraction` or `paper`, docs/METHOD.md) applies to the
variants with the learned policy; without it they run the recipe's form. The CSV records the form
that ran, the augmented share p it ended with, the final validation top-1 and the top-1 of the child
on the clean (un-augmented) training split.

    python bench/variants.py recipes/digits_quickstart.toml --csv docs/results/digits_variants.csv \\
        --seeds 0 1 2 [--set KEY=VALUE ...] [--variants dha dha:paper nas_only ...] [--work-dir /tmp/dha_variants]
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

TRIVIAL_AUGMENT = ["augment.trivial_augment=true"]
TA_START = ["augment.start=trivial_wide", "augment.form=paper", "augment.kl_weight=1.0"]
"""The learned policy that starts at TrivialAugment Wide, on every sample, held near its start (issue 28)."""
TA_VAL = [*TA_START, "augment.signal=val"]
"""The same policy moved by the clean held-out loss instead of adversarially."""
FIXED_P = ["augment.form=learned_fraction", "augment.fraction_lr=0"]
"""The share p of augmented samples fixed at `augment.fraction_start` (no hyper-steps of p)."""
JOINT_DHA = ["search.mode=joint", 'search.components=["nas","da","hpo"]']
MANUAL_DA_HPO = ["search.mode=manual", 'search.components=["da","hpo"]']
VARIANTS: dict[str, list[str]] = {
    "manual": ["search.mode=manual", "search.components=[]"],
    "manual_ta": ["search.mode=manual", "search.components=[]", *TRIVIAL_AUGMENT],
    "nas_only": ["search.mode=joint", 'search.components=["nas"]'],
    "nas_ta": ["search.mode=joint", 'search.components=["nas"]', *TRIVIAL_AUGMENT],
    "nas_da": ["search.mode=joint", 'search.components=["nas","da"]'],
    "nas_hpo": ["search.mode=joint", 'search.components=["nas","hpo"]'],
    "sequential": ["search.mode=sequential", 'search.components=["nas","da","hpo"]'],
    "dha": JOINT_DHA,
    "manual_da_hpo": MANUAL_DA_HPO,
    "manual_learned_ta": [*MANUAL_DA_HPO, *TA_START],
    "dha_ta": [*JOINT_DHA, *TA_START],
    "manual_learned_ta_val": [*MANUAL_DA_HPO, *TA_VAL],
    "dha_ta_val": [*JOINT_DHA, *TA_VAL],
    "dha_fixed_p25": [*JOINT_DHA, *FIXED_P, "augment.fraction_start=0.25"],
    "dha_fixed_p50": [*JOINT_DHA, *FIXED_P, "augment.fraction_start=0.5"],
    "manual_learned_ta_p25": [*MANUAL_DA_HPO, *TA_START, *FIXED_P, "augment.fraction_start=0.25"],
    "dha_ta_p25": [*JOINT_DHA, *TA_START, *FIXED_P, "augment.fraction_start=0.25"],
    "dha_ta_p50": [*JOINT_DHA, *TA_START, *FIXED_P, "augment.fraction_start=0.5"],
    "dha_ema": [*JOINT_DHA, "train.ema_epochs=1"],
    "dha_anchor": [*JOINT_DHA, "hpo.anchor=0.02"],
    "manual_ema": ["search.mode=manual", "search.components=[]", "train.ema_epochs=1"],
}
"""A variant's `--set` lines; `_p25`/`_p50`: the policy on a fixed share p of each batch (no hyper-steps of p);
`_ema`: with an average of the weights over the training phase (1 epoch's time constant), kept when better on
val; `_anchor`: eta pulled back toward the recipe's values (hpo.anchor = hyper_lr: at most a factor e away)."""
COLUMNS = ("variant", "form", "seed", "top1", "top5", "wall_s", "params", "macs", "onnx_top1", "torch_top1",
           "aug_fraction", "val_top1", "train_clean_top1", "space", "start", "policy_kl", "ema_val_top1", "ema_used")
FORMS = ("learned_fraction", "paper")


def parse_run(spec: str) -> tuple[str, str | None]:
    """'VARIANT' or 'VARIANT:FORM' -> (variant, form or None); SystemExit(2) naming the fix when unknown."""
    variant, _, form = spec.partition(":")
    if variant not in VARIANTS or (form and form not in FORMS):
        raise SystemExit(f"error: '{spec}' is not VARIANT[:FORM] with VARIANT one of {', '.join(VARIANTS)} "
                         f"and FORM one of {', '.join(FORMS)}")
    return variant, form or None


def measured(csv_path: Path, key: str = "variant") -> set[tuple[str, ...]]:
    """(space, key column, form, seed) of the rows already in the CSV (form '' where it does not apply, space
    'darts' where the CSV has no space column); (key column, seed) for a CSV without a form column."""
    if not csv_path.is_file():
        return set()
    with open(csv_path, newline="") as handle:
        return {(row.get("space") or "darts", row[key], row["form"], int(row["seed"])) if "form" in row
                else (row[key], int(row["seed"])) for row in csv.DictReader(handle)}


def variant_recipe(recipe_path: Path, variant: str, seed: int, name: str, overrides: list[str],
                   work_dir: Path, form: str | None = None) -> Recipe:
    """The recipe of one run: `overrides`, then the variant's lines (and form), seed and name, outputs under
    work_dir."""
    lines = [*overrides, *VARIANTS[variant], *([f"augment.form={form}"] if form else [])]
    return stages.resolve_recipe(recipe_path, [*lines, f"seed={seed}", f"name={name}",
                                               f"runs_dir={json.dumps(str(work_dir / 'runs'))}",
                                               f"exports_dir={json.dumps(str(work_dir / 'exports'))}"])


def form_of(recipe: Recipe) -> str:
    """The augmentation form a run uses: the recipe's, where the learned policy is on; '' otherwise."""
    return recipe.augment.form if "da" in recipe.search.components else ""


def run_one(recipe_path: Path, variant: str, seed: int, extra: list[str], work_dir: Path,
            form: str | None = None) -> dict[str, object]:
    """One full pipeline run; returns its CSV row."""
    name = f"{recipe_path.stem}_{variant}{'_' + form if form else ''}_s{seed}"
    recipe = variant_recipe(recipe_path, variant, seed, name, extra, work_dir, form)
    started = time.perf_counter()
    stages.run_all(recipe, force=True)
    wall = time.perf_counter() - started
    layout = recipe.layout
    onnx_report = json.loads(layout.exports.evaluation.read_text())
    metadata = json.loads(layout.exports.metadata.read_text())
    split = recipe.evaluate.split
    data = load_cache(layout.cache, (split, "train"))
    torch_report = evaluate_model(layout.child, data.sources[split], dataset=recipe.data.dataset, split=split,
                                  classes=data.classes, latency_runs=1,
                                  out=work_dir / f"{name}.torch_evaluation.json")
    train_report = evaluate_model(layout.child, data.sources["train"], dataset=recipe.data.dataset, split="train",
                                  classes=data.classes, latency_runs=1,
                                  out=work_dir / f"{name}.train_evaluation.json")
    with open(layout.history, newline="") as handle:
        final = list(csv.DictReader(handle))[-1]
    augment = metadata["hyperparameters"].get("augment") or {}
    policy = metadata["hyperparameters"].get("policy") or {}
    average = json.loads(layout.summary.read_text()).get("weight_average") or {}
    return {"variant": variant, "form": form_of(recipe), "seed": seed, "top1": onnx_report["top1"],
            "top5": onnx_report.get("top5", ""), "wall_s": round(wall, 1), "params": metadata["params"],
            "macs": metadata["macs"], "onnx_top1": onnx_report["top1"], "torch_top1": torch_report.report["top1"],
            "aug_fraction": augment.get("fraction", ""), "val_top1": float(final["val_top1"]),
            "train_clean_top1": train_report.report["top1"], "space": recipe.model.space,
            "start": policy.get("start", ""), "policy_kl": round(policy["kl_to_start"], 5) if policy else "",
            "ema_val_top1": average.get("val_top1", ""), "ema_used": average.get("used", "")}


def append_row(csv_path: Path, row: dict[str, object], columns: tuple[str, ...] = COLUMNS) -> None:
    """Append one row, writing the header for a new file; a file that exists keeps its own columns (keys it
    lacks are left out, so rows of older protocols stay aligned)."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new = not csv_path.is_file()
    if not new:
        with open(csv_path, newline="") as handle:
            columns = tuple(next(csv.reader(handle), columns))
    with open(csv_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_protocol(recipe: Path, csv_path: Path, seeds: list[int], runs: list[str], overrides: list[str],
                 work_dir: Path) -> None:
    """Every run (VARIANT[:FORM]) x seed not yet in the CSV, seed-major (all runs get seed 0 first)."""
    done = measured(csv_path)
    for seed in seeds:
        for spec in runs:
            variant, form = parse_run(spec)
            probe = variant_recipe(recipe, variant, seed, "probe", overrides, work_dir, form)
            if (probe.model.space, variant, form_of(probe), seed) in done:
                continue
            row = run_one(recipe, variant, seed, overrides, work_dir, form)
            append_row(csv_path, row)
            print(",".join(str(row[c]) for c in COLUMNS), flush=True)


def retime_rows(recipe: Path, csv_path: Path, pairs: list[tuple[str, int]], overrides: list[str],
                work_dir: Path) -> None:
    """Rerun measured (variant, seed) rows (the paper-form row where a variant has both forms) and replace only
    their wall_s, after checking that the rerun
    reproduces every other column; a row that does not reproduce is left as it was and reported."""
    for variant, seed in pairs:
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        old = next((row for row in rows if row["variant"] == variant and int(row["seed"]) == seed
                    and row["form"] in ("", "paper")), None)
        if old is None:
            raise SystemExit(f"error: {variant} seed {seed} is not in {csv_path}; measure it first (no --retime)")
        new = run_one(recipe, variant, seed, overrides, work_dir, old["form"] or None)
        changed = [c for c in COLUMNS if c != "wall_s" and old[c] != "" and str(new[c]) != old[c]]
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
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="VARIANT[:FORM]")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra recipe override")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/dha_variants"))
    args = parser.parse_args()
    run_protocol(args.recipe, args.csv, args.seeds, args.variants, args.overrides, args.work_dir)


if __name__ == "__main__":
    main()
