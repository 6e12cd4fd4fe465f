"""Is the learned share p driven by its signal or by noise? Read back from the runs' hparams.csv.

Each hyper-step of p moves logit(p) by `fraction_lr` x cos(g_val, g_aug - g_clean); hparams.csv logs
the per-epoch mean of those cosines. For every run with a learned p this prints the mean cosine over
the epochs with its standard error and z-score (a consistent sign is |z| >= 2), how far the steps
moved logit(p) over the run (logit of the final p minus logit of `augment.fraction_start`), the
standard deviation of that movement for a pure-noise walk with the same epoch-to-epoch spread, and
the final p. A run whose |z| is under 2
ended where its noise took it, not where its signal did. The statistics weight every epoch alike,
also where epochs hold different numbers of hyper-steps, so z and the noise are approximate.

    python bench/fraction_signal.py /tmp/dha_cifar10/runs /tmp/dha_cifar10_smalldata/runs
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import tomllib
from pathlib import Path
from typing import NamedTuple


class FractionSignal(NamedTuple):
    """Signal and noise of one run's hyper-steps of p."""

    run: str
    epochs: int
    hyper_steps: int
    mean_cosine: float
    standard_error: float
    moved: float
    noise_sd: float
    final_fraction: float

    @property
    def z(self) -> float:
        """The mean cosine in standard errors (0 when the spread is 0)."""
        return self.mean_cosine / self.standard_error if self.standard_error > 0 else 0.0


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def fraction_signal(cosines: list[float], *, steps_per_epoch: int, every: int, fraction_lr: float,
                    start_fraction: float, final_fraction: float, run: str = "") -> FractionSignal:
    """Signal and noise from per-epoch mean cosines (at least two epochs): `every` and `steps_per_epoch`
    give the hyper-steps per epoch, `fraction_lr` the logit step per unit cosine."""
    if len(cosines) < 2:
        raise ValueError("need the mean cosines of at least two epochs")
    per_epoch = steps_per_epoch / every
    spread = statistics.stdev(cosines)
    mean = statistics.fmean(cosines)
    steps = round(per_epoch * len(cosines))
    return FractionSignal(run=run, epochs=len(cosines), hyper_steps=steps, mean_cosine=mean,
                          standard_error=spread / math.sqrt(len(cosines)),
                          moved=_logit(final_fraction) - _logit(start_fraction),
                          noise_sd=fraction_lr * spread * per_epoch * math.sqrt(len(cosines)),
                          final_fraction=final_fraction)


def _finite(text: str | None) -> bool:
    """Whether a CSV cell holds a finite number (the loop writes nan for an epoch without a hyper-step of p)."""
    try:
        return text is not None and math.isfinite(float(text))
    except ValueError:
        return False


def run_signal(run_dir: Path, steps_per_epoch: int | None = None) -> FractionSignal | None:
    """The signal of the run in `run_dir`, or None when it did not learn p. Steps per epoch come from the
    recipe's `data.train_subset` and `train.batch_size` unless given."""
    with open(run_dir / "search" / "hparams.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if _finite(row.get("fraction_cosine"))]
    if len(rows) < 2:
        return None
    recipe = tomllib.loads((run_dir / "recipe.resolved.toml").read_text())
    if steps_per_epoch is None:
        subset = int(recipe["data"].get("train_subset", 0))
        if subset <= 0:
            raise ValueError(f"{run_dir}: the recipe trains on its whole split; pass --steps-per-epoch")
        steps_per_epoch = subset // int(recipe["train"]["batch_size"])
    augment = recipe["augment"]
    cosines = [float(row["fraction_cosine"]) for row in rows]
    return fraction_signal(cosines, steps_per_epoch=steps_per_epoch, every=int(augment["fraction_every"]),
                           fraction_lr=float(augment["fraction_lr"]), start_fraction=float(augment["fraction_start"]),
                           final_fraction=float(rows[-1]["aug_fraction"]), run=run_dir.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="runs/ folders of protocol work dirs")
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="training steps per epoch (default: the recipe's train_subset // batch_size)")
    args = parser.parse_args()
    try:
        signals = [signal for folder in args.runs for run_dir in sorted(folder.glob("*/search/hparams.csv"))
                   if (signal := run_signal(run_dir.parent.parent, args.steps_per_epoch)) is not None]
    except (OSError, KeyError, ValueError) as error:
        parser.error(str(error))
    if not signals:
        parser.error("no run with a learned p under " + ", ".join(map(str, args.runs)))
    print("| run | epochs | hyper-steps | mean cos | s.e. | z | logit p moved | pure-noise sd | final p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for s in signals:
        print(f"| {s.run} | {s.epochs} | {s.hyper_steps} | {s.mean_cosine:+.4f} | {s.standard_error:.4f} "
              f"| {s.z:+.1f} | {s.moved:+.2f} | {s.noise_sd:.2f} | {s.final_fraction:.2f} |")


if __name__ == "__main__":
    main()
