"""bench/fraction_signal.py: tells a consistent hypergradient of p from a random walk."""

from __future__ import annotations

import csv
import math

import pytest
from conftest import load_bench_script


def test_a_consistent_sign_has_a_large_z_and_reports_how_far_logit_p_moved():
    script = load_bench_script("fraction_signal")
    signal = script.fraction_signal([0.05, 0.07, 0.06, 0.05], steps_per_epoch=8, every=4, fraction_lr=1.0,
                                    start_fraction=0.5, final_fraction=0.6)
    assert signal.hyper_steps == 8
    assert signal.moved == pytest.approx(math.log(0.6 / 0.4))
    assert signal.z > 2


def test_alternating_signs_are_noise():
    script = load_bench_script("fraction_signal")
    signal = script.fraction_signal([0.1, -0.1] * 10, steps_per_epoch=4, every=4, fraction_lr=1.0,
                                    start_fraction=0.5, final_fraction=0.5)
    assert signal.mean_cosine == pytest.approx(0.0, abs=1e-12)
    assert abs(signal.z) < 1
    assert signal.noise_sd > 0.3  # a walk of 20 steps of about 0.1 each


def test_one_epoch_is_refused():
    with pytest.raises(ValueError, match="two epochs"):
        load_bench_script("fraction_signal").fraction_signal([0.1], steps_per_epoch=4, every=4, fraction_lr=1.0,
                                                             start_fraction=0.5, final_fraction=0.5)


def test_run_signal_reads_a_run_folder_and_skips_runs_without_p(tmp_path):
    script = load_bench_script("fraction_signal")
    run = tmp_path / "runs" / "r"
    (run / "search").mkdir(parents=True)
    (run / "recipe.resolved.toml").write_text(
        "[data]\ntrain_subset = 640\n[train]\nbatch_size = 64\n[augment]\nfraction_every = 5\nfraction_lr = 0.5\n"
        "fraction_start = 0.5\n")
    with open(run / "search" / "hparams.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "aug_fraction", "fraction_cosine"])
        writer.writeheader()
        writer.writerows([{"epoch": 1, "aug_fraction": 0.45, "fraction_cosine": -0.1},
                          {"epoch": 2, "aug_fraction": 0.40, "fraction_cosine": -0.3}])
    signal = script.run_signal(run)
    assert signal.hyper_steps == 4 and signal.final_fraction == 0.40
    assert signal.moved == pytest.approx(math.log(0.4 / 0.6))
    assert signal.z < 0
    with open(run / "search" / "hparams.csv", "w", newline="") as handle:
        handle.write("epoch,aug_fraction,fraction_cosine\n1,,\n2,,\n")
    assert script.run_signal(run) is None
    with open(run / "search" / "hparams.csv", "w", newline="") as handle:  # the paper form: p fixed at 1
        handle.write("epoch,aug_fraction,fraction_cosine\n1,1.0,nan\n2,1.0,nan\n")
    assert script.run_signal(run) is None
