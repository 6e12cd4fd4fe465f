"""The CIFAR-10 protocol of docs/BENCHMARKS.md: DHA and its baselines at one CPU budget, one command.

A fixed stratified subset of the training images (`--subset`, default 1,000: 100 per class) trains
every variant for the same number of epochs (default 50, enough for the manual baseline to overfit)
with the CPU-sized network below; 1,000 further training images are the validation split. The rest
of the recipe
(`recipes/cifar10_darts.toml`, whose DHA settings are the tuned ones) is unchanged. Each run is a
whole `dha run`: search, derive, parity-gated ONNX export, then the full 10,000-image test set
evaluated exactly once by onnxruntime. Rows go to the CSV as runs finish; rerunning skips them.
A run is VARIANT[:FORM] (bench/variants.py). `--retime dha:0 manual:0` reruns measured rows alone on
the machine and replaces only their wall_s, after checking that every other column reproduced.

    tar xzf ../shared/data/cifar10/cifar10-jpeg.tar.gz -C /tmp/data    # /tmp/data/{train,test}/<class>/
    python bench/cifar10_variants.py --data /tmp/data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from variants import VARIANTS, retime_rows, run_protocol

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "cifar10_darts.toml"
# Seeds per run (VARIANT[:FORM]): 3 for DHA (both forms) and NAS only, 2 for the other baselines; runs go
# seed-major. The baselines with the learned policy were measured in the paper's form (every sample
# augmented) before the learned fraction existed, and stay so.
SEEDS = {"dha": 3, "dha:paper": 3, "nas_only": 3, "manual": 2, "nas_da:paper": 2, "nas_hpo": 2,
         "sequential:paper": 2}


def protocol_overrides(data: Path, subset: int, epochs: int) -> list[str]:
    """The `--set` lines every variant shares: data, budget and the CPU-sized network (the recipe's lr taken as it
    is at batch 64, as every protocol row was measured)."""
    return [f"data.dataset=imagefolder:{data}", f"data.train_subset={subset}", "data.val_fraction=0.02",
            f"train.epochs={epochs}", "train.batch_size=64", "train.lr_batch=64", "model.init_channels=12",
            "model.layers=5", "model.auxiliary=false"]


def protocol_parser(description: str, seeds: dict[str, int], *, subset: int, epochs: int, csv_path: Path,
                    work_dir: Path) -> argparse.ArgumentParser:
    """The arguments every CIFAR-10 protocol takes, with that protocol's defaults and runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True, help="ImageFolder root with train/ and test/")
    parser.add_argument("--subset", type=int, default=subset, help="stratified training images (0 = all)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--csv", type=Path, default=csv_path)
    parser.add_argument("--work-dir", type=Path, default=work_dir)
    parser.add_argument("--variants", nargs="+", default=list(seeds), choices=list(seeds), metavar="RUN",
                        help=f"runs of the protocol: {', '.join(seeds)}")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: each run's count)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="one more recipe override for every run (e.g. search.budget_minutes=3)")
    return parser


def protocol_run_overrides(args: argparse.Namespace) -> list[str]:
    """The checked data folder's protocol overrides plus the `--set` lines; exit 2 naming the fix when the
    folder is not the extracted CIFAR-10 copy."""
    if not (args.data / "train").is_dir() or not (args.data / "test").is_dir():
        print(f"error: '{args.data}' has no train/ and test/ folders; extract "
              "../shared/data/cifar10/cifar10-jpeg.tar.gz there first", file=sys.stderr)
        raise SystemExit(2)
    return [*protocol_overrides(args.data.resolve(), args.subset, args.epochs), *args.extra]


def run_seeds(seeds: dict[str, int], args: argparse.Namespace, overrides: list[str], recipe: Path = RECIPE) -> None:
    """Seed-major: each chosen run up to its seed count (or only `--seeds`), rows skipped when measured."""
    for seed in args.seeds if args.seeds is not None else range(max(seeds.values())):
        runs = [run for run in args.variants if seed < seeds[run]]
        run_protocol(recipe, args.csv, [seed], runs, overrides, args.work_dir)


def main() -> None:
    parser = protocol_parser(__doc__.splitlines()[0], SEEDS, subset=1000, epochs=50,
                             csv_path=ROOT / "docs" / "results" / "cifar10_variants.csv",
                             work_dir=Path("/tmp/dha_cifar10"))
    parser.add_argument("--retime", nargs="+", default=[], metavar="VARIANT:SEED",
                        help="rerun these measured rows and replace only their wall_s")
    args = parser.parse_args()
    retime = []
    for pair in args.retime:
        variant, _, seed = pair.partition(":")
        if variant not in VARIANTS or not seed.isdigit():
            print(f"error: --retime '{pair}' is not VARIANT:SEED with VARIANT one of {', '.join(VARIANTS)}",
                  file=sys.stderr)
            raise SystemExit(2)
        retime.append((variant, int(seed)))
    overrides = protocol_run_overrides(args)
    if retime:
        retime_rows(RECIPE, args.csv, retime, overrides, args.work_dir)
        return
    run_seeds(SEEDS, args, overrides)


if __name__ == "__main__":
    main()
