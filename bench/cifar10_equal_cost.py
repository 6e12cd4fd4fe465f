"""Issue 27's protocols: searched networks against the hand design at equal cost, with each new search
setting switched off in turn (docs/BENCHMARKS.md, "Searched networks at equal cost").

Three protocols, the existing ones so rows compare: A = the cell space, 1,000 training images x 50 epochs;
B = the cell space, 500 x 150; M = the MobileNet space, 1,000 x 50 (data, split, network and test
evaluation as bench/cifar10_variants.py and bench/cifar10_mobilenet.py). The settings under test (`NEW`:
a params target at the hand design's own cost, a warm-up, the search starting at the known design, the
cap on parameter-free ops) are set by the arms whose names end in `_new`; each `no_*` / `random_init`
arm is NAS only with all of them but one; `dha_no_warmup` is DHA with all but the warm-up; `fixed_code` is
NAS only without the warm-up whose codes never move (arch_lr 0) and never freeze before the search cap: the
hand design trained inside the supernet, which separates what the one-stage training costs from what the
search's moves cost; `affine_always` and `dha_affine_always` are `no_warmup` and `dha_no_warmup` whose ops'
BatchNorm scales and shifts train from the start (`search.op_affine = "always"`); `still_warmup` and
`dha_still_warmup` warm up without redrawing (the known design alone trains while the codes wait);
`nas_ta_still` is `still_warmup` with TrivialAugment Wide on every sample, `nas_hpo_still` with HPO,
`nas_hpo_anchor` / `dha_anchor` are `nas_hpo_still` / `dha_still_warmup` with eta held near its start
(hpo.anchor), `dha_anchor_p25` / `_p50` the same with the pairs policy on a fixed share p of each batch,
`dha_ta` is `dha_still_warmup` whose learned policy starts at TrivialAugment Wide on every sample, held
near it by a KL term (variants.TA_START), and `manual_learned_ta` is that policy with HPO on the fixed hand
design; `_p25` / `_p50` put the policy on a fixed share p of each batch. The plain arms run the recipe as
it is.
Every run is a whole `dha run`; each row adds the child's cost against its target and its batch-1
onnxruntime latency on one thread (median of `--latency-runs` after a warm-up), measured right after
the run. Rows go to `--csv` as runs finish; rerunning skips them.

    tar xzf ../shared/data/cifar10/cifar10-jpeg.tar.gz -C /tmp/data    # /tmp/data/{train,test}/<class>/
    python bench/cifar10_equal_cost.py --data /tmp/data --protocol A --arms manual nas_only_new dha_new --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from cifar10_variants import protocol_overrides
from variants import append_row, run_one

from dha_pipeline.evaluate import measure_latency
from dha_pipeline.formats.base import Runtime
from dha_pipeline.formats.registry import load_backend
from dha_pipeline.stages import resolve_recipe

ROOT = Path(__file__).resolve().parent.parent
PROTOCOLS = {"A": ("cifar10_darts.toml", 1000, 50), "B": ("cifar10_darts.toml", 500, 150),
             "M": ("cifar10_mobilenet.toml", 1000, 50)}
NEW = {"target": "search.target=params", "warmup": "search.warmup_epochs=10", "init": "search.init=known",
       "cap": "model.max_parameter_free=2"}
"""Issue 27's search settings, each on (the cap exists in the cell space only)."""
OFF = {"target": "search.target=none", "warmup": "search.warmup_epochs=0", "init": "search.init=random",
       "cap": "model.max_parameter_free=-1"}
"""The same settings switched off, stated so that an arm means the same whatever the recipe's defaults."""
REDRAW_SHARE = "0.25"
REDRAW = f"search.warmup_redraw={REDRAW_SHARE}"
"""The warm-up's redraw share the `_new` arms were measured with."""


ANCHOR = "0.02"
"""The pull of eta back to the recipe's values the `_anchor` arms use (hpo.anchor; = hyper_lr: at most a
factor e away)."""


def new_but(*off: str, redraw: str = REDRAW_SHARE) -> list[str]:
    """The new settings except those named in `off`, which are switched off; a warm-up redraws `redraw`."""
    lines = [OFF[key] if key in off else line for key, line in NEW.items()]
    return lines if "warmup" in off else [*lines, f"search.warmup_redraw={redraw}"]


ARMS: dict[str, tuple[str, list[str]]] = {
    "manual": ("manual", []),
    "manual_ta": ("manual_ta", []),
    "nas_only": ("nas_only", []),
    "dha": ("dha", []),
    "nas_only_new": ("nas_only", new_but()),
    "dha_new": ("dha", new_but()),
    "no_target": ("nas_only", new_but("target")),
    "no_warmup": ("nas_only", new_but("warmup")),
    "dha_no_warmup": ("dha", new_but("warmup")),
    "fixed_code": ("nas_only", [*new_but("warmup"), "search.arch_lr=0", "search.freeze_threshold=0"]),
    "still_warmup": ("nas_only", new_but(redraw="0")),
    "dha_still_warmup": ("dha", new_but(redraw="0")),
    "affine_always": ("nas_only", [*new_but("warmup"), "search.op_affine=always"]),
    "dha_affine_always": ("dha", [*new_but("warmup"), "search.op_affine=always"]),
    "nas_ta_still": ("nas_ta", new_but(redraw="0")),
    "dha_ta": ("dha_ta", new_but(redraw="0")),
    "manual_learned_ta": ("manual_learned_ta", []),
    "nas_hpo_still": ("nas_hpo", new_but(redraw="0")),
    "nas_hpo_anchor": ("nas_hpo", [*new_but(redraw="0"), f"hpo.anchor={ANCHOR}"]),
    "dha_anchor": ("dha", [*new_but(redraw="0"), f"hpo.anchor={ANCHOR}"]),
    "dha_anchor_p25": ("dha_fixed_p25", [*new_but(redraw="0"), f"hpo.anchor={ANCHOR}"]),
    "dha_anchor_p50": ("dha_fixed_p50", [*new_but(redraw="0"), f"hpo.anchor={ANCHOR}"]),
    "dha_ta_p25": ("dha_ta_p25", new_but(redraw="0")),
    "dha_ta_p50": ("dha_ta_p50", new_but(redraw="0")),
    "manual_learned_ta_p25": ("manual_learned_ta_p25", []),
    "random_init": ("nas_only", new_but("init")),
    "no_cap": ("nas_only", new_but("cap")),
    "uniform_warmup": ("nas_only", new_but(redraw="1.0")),
    "manual_small": ("manual", []),
    "manual_large": ("manual", []),
}
WIDTHS = {"manual_small": {"A": "model.init_channels=8", "B": "model.init_channels=8", "M": "model.width_mult=0.35"},
          "manual_large": {"A": "model.init_channels=16", "B": "model.init_channels=16", "M": "model.width_mult=0.75"}}
"""The hand design at other widths (the protocols' own: 12 channels, width 0.5): the line of the plot."""
COLUMNS = ("protocol", "arm", "seed", "space", "val_top1", "top1", "params", "macs", "latency_ms", "target",
           "target_ratio", "in_band", "genotype", "train_clean_top1", "aug_fraction", "wall_s")


def child_latency_ms(model: Path, size: int, channels: int, runs: int) -> float:
    """Median batch-1 latency of an exported ONNX model on one onnxruntime CPU thread."""
    backend = load_backend(model, Runtime(provider="cpu", threads=1))
    sample = np.random.default_rng(0).standard_normal((1, channels, size, size)).astype(np.float32)
    return round(measure_latency(backend, sample, runs, warmup=20, batch_runs=1)["batch1_p50"], 4)


def measured(csv_path: Path) -> set[tuple[str, str, int]]:
    """(protocol, arm, seed) of the rows already in the CSV."""
    if not csv_path.is_file():
        return set()
    with open(csv_path, newline="") as handle:
        return {(row["protocol"], row["arm"], int(row["seed"])) for row in csv.DictReader(handle)}


def run_arm(protocol: str, arm: str, seed: int, data: Path, work_dir: Path, extra: list[str],
            latency_runs: int) -> dict[str, object]:
    """One whole run of an arm in a protocol, as its CSV row."""
    recipe_name, subset, epochs = PROTOCOLS[protocol]
    recipe_path = ROOT / "recipes" / recipe_name
    overrides = protocol_overrides(data, subset, epochs)
    if protocol == "M":  # the cell-space network keys do not exist in the MobileNet space
        overrides = [line for line in overrides if not line.startswith("model.")]
    variant, lines = ARMS[arm]
    if protocol == "M":
        lines = [line for line in lines if not line.startswith("model.max_parameter_free")]
    if arm in WIDTHS:
        lines = [*lines, WIDTHS[arm][protocol]]
    arm_dir = work_dir / protocol / arm
    row = run_one(recipe_path, variant, seed, [*overrides, *extra, *lines], arm_dir)
    name = f"{recipe_path.stem}_{variant}_s{seed}"
    recipe = resolve_recipe(recipe_path, [*overrides, f"name={name}", f"runs_dir={json.dumps(str(arm_dir / 'runs'))}",
                                          f"exports_dir={json.dumps(str(arm_dir / 'exports'))}"])
    layout = recipe.layout
    summary = json.loads(layout.summary.read_text())
    target = summary.get("target") or {}
    latency = child_latency_ms(layout.exports.model("onnx"), recipe.data.image_size, 3, latency_runs)
    return {"protocol": protocol, "arm": arm, "seed": seed, "space": row["space"], "val_top1": row["val_top1"],
            "top1": row["top1"], "params": row["params"], "macs": row["macs"], "latency_ms": latency,
            "target": target.get("target", ""), "target_ratio": round(target["ratio"], 4) if target else "",
            "in_band": target.get("in_band", ""), "genotype": json.dumps(summary["genotype"], separators=(",", ":")),
            "train_clean_top1": row["train_clean_top1"], "aug_fraction": row["aug_fraction"],
            "wall_s": row["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder root with train/ and test/")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), required=True)
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=["manual", "nas_only_new", "dha_new"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--csv", type=Path, default=ROOT / "docs" / "results" / "equal_cost.csv")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/dha_equal_cost"))
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        print(f"error: '{args.data}' has no train/ and test/ folders; extract "
              "../shared/data/cifar10/cifar10-jpeg.tar.gz there first", file=sys.stderr)
        raise SystemExit(2)
    done = measured(args.csv)
    for seed in args.seeds:  # seed-major, so every arm has its first seed before any has its second
        for arm in args.arms:
            if (args.protocol, arm, seed) in done:
                continue
            row = run_arm(args.protocol, arm, seed, args.data.resolve(), args.work_dir, args.extra, args.latency_runs)
            append_row(args.csv, row, COLUMNS)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
