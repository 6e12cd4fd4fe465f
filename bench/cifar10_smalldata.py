"""Regime B of docs/BENCHMARKS.md: CIFAR-10 with so few images that the manual baseline overfits plainly.

Where the regime-A protocol (bench/cifar10_variants.py) underfits and augmentation should step aside,
here augmentation should pay: a stratified subset of 500 training images (50 per class) trains every
run for `--epochs` (default 150: the manual baseline then fits its clean training images and scores far
lower on val), with the same CPU-sized network and the same 1,000-image val split. The runs are the
baselines users know (manual, manual + TrivialAugment Wide, NAS only, NAS + TrivialAugment Wide), the
ablation NAS+DA, and DHA in the paper's form (every sample augmented) and in the default form (the
learned share p). Each is a whole `dha run`, tested once by onnxruntime on the full 10,000-image test
set; rows go to docs/results/cifar10_smalldata.csv as they finish, and rerunning skips them.

    tar xzf ../shared/data/cifar10/cifar10-jpeg.tar.gz -C /tmp/data    # /tmp/data/{train,test}/<class>/
    python bench/cifar10_smalldata.py --data /tmp/data
"""

from __future__ import annotations

from pathlib import Path

from cifar10_variants import protocol_parser, protocol_run_overrides, run_seeds

ROOT = Path(__file__).resolve().parent.parent
# Seeds per run (VARIANT[:FORM]), in the order runs go within a seed: 3 for NAS only, NAS + TrivialAugment
# and both forms of DHA, 2 for the others.
SEEDS = {"nas_only": 3, "dha": 3, "nas_ta": 3, "dha:paper": 3, "manual": 2, "manual_ta": 2, "nas_da": 2}


def main() -> None:
    parser = protocol_parser(__doc__.splitlines()[0], SEEDS, subset=500, epochs=150,
                             csv_path=ROOT / "docs" / "results" / "cifar10_smalldata.csv",
                             work_dir=Path("/tmp/dha_cifar10_smalldata"))
    args = parser.parse_args()
    run_seeds(SEEDS, args, protocol_run_overrides(args))


if __name__ == "__main__":
    main()
