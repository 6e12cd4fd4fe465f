"""Seconds per training step of the search variants on the same space and batch, interleaved.

NAS only, NAS+DA, NAS+HPO (next_batch and held_in estimators) and DHA each get
their own SearchRun on identical synthetic data; their steps are timed
round-robin. DHA runs in the paper's form (every sample augmented) and in the
learned-fraction form at p = 0.5, timed on a step that is a hyper-step of p
(one more backward, and a clean held-out forward/backward) and on one that is
not; `dha_mean` weighs them as a run does (one hyper-step every
`augment.fraction_every` steps). `dha_trivial` is DHA with the policy that starts at TrivialAugment
Wide on every sample; `dha_trivial_fixed_p` the same on a fixed share p = 0.5 (no hyper-steps of p);
`dha_trivial_val_*` the same policy moved by the held-out signal (`augment.signal = "val"`), timed on a
step that moves tau and on one that does not.
The last lines are ratios against NAS only.

    python bench/search_step.py [--size 32] [--channels 16] [--layers 8] [--batch 64] [--rounds 12] [--device cpu]
                                [--precision fp32|bf16] [--channels-last auto|on|off]

It also prints each variant's images per second (batch / median step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, synthetic_data  # noqa: E402

from dha_pipeline.data.device import to_unit  # noqa: E402
from dha_pipeline.recipe import recipe_from_dict  # noqa: E402
from dha_pipeline.search.loop import SearchRun  # noqa: E402

DHA = ["nas", "da", "hpo"]
PAPER = {"form": "paper"}
LEARNED_P = {"form": "learned_fraction", "fraction_lr": 1.0}
DEFAULT_FORM: dict[str, object] = {}
"""The recipe's defaults: pairs on a fixed half of each batch (no hyper-steps of p), eta held near its start."""
TRIVIAL = {"form": "paper", "start": "trivial_wide"}
# name: (components, estimator, augment settings, step within the epoch)
VARIANTS = {
    "nas_only": (["nas"], "next_batch", PAPER, 0),
    "nas_da": (["nas", "da"], "next_batch", PAPER, 0),
    "nas_hpo_next_batch": (["nas", "hpo"], "next_batch", PAPER, 0),
    "nas_hpo_held_in": (["nas", "hpo"], "held_in", PAPER, 0),
    "dha": (DHA, "next_batch", PAPER, 0),
    "dha_default": (DHA, "next_batch", DEFAULT_FORM, 0),
    "dha_fraction_hyper_step": (DHA, "next_batch", LEARNED_P, 0),
    "dha_fraction_plain_step": (DHA, "next_batch", LEARNED_P, 1),
    "dha_trivial": (DHA, "next_batch", TRIVIAL, 0),
    "dha_trivial_fixed_p": (DHA, "next_batch", {**LEARNED_P, "start": "trivial_wide", "fraction_lr": 0.0}, 0),
    "dha_trivial_val_step": (DHA, "next_batch", {**TRIVIAL, "signal": "val"}, 0),
    "dha_trivial_val_plain_step": (DHA, "next_batch", {**TRIVIAL, "signal": "val"}, 1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--runs-dir", default="/tmp/dha_bench_runs")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--channels-last", default="auto", choices=("auto", "on", "off"))
    args = parser.parse_args()
    data = synthetic_data(4 * args.batch, args.size)
    runs = {}
    for name, (components, estimator, augment, step) in VARIANTS.items():
        recipe = recipe_from_dict({"name": name, "runs_dir": args.runs_dir, "device": args.device,
                                   "data": {"image_size": args.size},
                                   "model": {"init_channels": args.channels, "layers": args.layers},
                                   "train": {"batch_size": args.batch, "precision": args.precision,
                                             "channels_last": args.channels_last},
                                   "search": {"mode": "joint", "components": components},
                                   "augment": augment, "hpo": {"estimator": estimator}})
        run = SearchRun(recipe, data)
        run.network.train()
        run.step_in_epoch = step
        runs[name] = run
    dha = runs["dha"]
    index = torch.arange(args.batch, device=dha.device)
    images, labels = dha.source.splits["train"].take(index)
    unit = to_unit(images)
    per_sample = torch.rand(args.batch, device=dha.device)

    def da_work() -> None:
        """What DA adds to a step: sample, apply, the tau step."""
        sample = dha.policy.sample(args.batch, dha.generator)
        dha.policy.apply(unit, sample)
        dha.policy.zero_grad()
        dha.policy.loss(sample, per_sample).backward()
        dha.policy.step()

    def hpo_work() -> None:
        """What next_batch HPO adds to a step: the dot products, the hyper-step and writing lr/wd."""
        dha.hyper.update(dha.theta, 0, 0.0)

    candidates = {name: (lambda r=run: r.train_step(images, labels)) for name, run in runs.items()}
    candidates.update({"da_work": da_work, "hpo_work": hpo_work})
    medians = interleaved_medians(candidates, args.rounds)
    print(f"torch {torch.__version__}, device {dha.device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}x3x{args.size}x{args.size}, C={args.channels}, layers={args.layers}, "
          f"rounds={args.rounds}, precision {args.precision}, channels_last {dha.forward_train.channels_last}")
    for name, seconds in medians.items():
        print(f"{name}_ms={1000 * seconds:.1f} ratio_vs_nas_only={seconds / medians['nas_only']:.3f} "
              f"img_per_s={args.batch / seconds:.0f}")
    added = medians["da_work"] + medians["hpo_work"]
    print(f"dha_added_work_ms={1000 * added:.1f} "
          f"(isolated DA + HPO work as a share of a NAS-only step: {added / medians['nas_only']:.3f})")
    print(f"dha_vs_nas_only_step_ratio={medians['dha'] / medians['nas_only']:.3f}")
    every = runs["dha_fraction_hyper_step"].recipe.augment.fraction_every
    mean = (medians["dha_fraction_hyper_step"] + (every - 1) * medians["dha_fraction_plain_step"]) / every
    print(f"dha_fraction_mean_ms={1000 * mean:.1f} (one hyper-step of p every {every} steps)")
    print(f"dha_fraction_vs_nas_only_step_ratio={mean / medians['nas_only']:.3f}")
    print(f"dha_fraction_vs_dha_paper_step_ratio={mean / medians['dha']:.3f}")
    for name in ("dha_default", "dha_trivial", "dha_trivial_fixed_p"):
        print(f"{name}_vs_nas_only_step_ratio={medians[name] / medians['nas_only']:.3f}")
    every = runs["dha_trivial_val_step"].recipe.augment.signal_every
    mean = (medians["dha_trivial_val_step"] + (every - 1) * medians["dha_trivial_val_plain_step"]) / every
    print(f"dha_trivial_val_mean_ms={1000 * mean:.1f} (one step of tau on the held-out signal every {every} steps)")
    print(f"dha_trivial_val_vs_nas_only_step_ratio={mean / medians['nas_only']:.3f}")


if __name__ == "__main__":
    main()
