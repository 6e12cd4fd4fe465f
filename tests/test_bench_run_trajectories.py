"""bench/run_trajectories.py: one Markdown row per finished run, read back from its run folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from conftest import BENCH, TINY_RECIPE, load_bench_script, write_recipe

from cli.main import main

SCRIPT = BENCH / "run_trajectories.py"


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_manual_run_reads_its_own_history_and_follows_the_schedule(run_dir: Path) -> None:
    row = cells(load_bench_script("run_trajectories").trajectory_row(run_dir))
    epochs = history(run_dir)
    summary = json.loads((run_dir / "search" / "summary.json").read_text())
    assert row[0] == run_dir.name
    assert row[1] == f"{100 * float(epochs[-1]['val_top1']):.1f}"
    assert row[2] == f"{100 * max(float(epoch['val_top1']) for epoch in epochs):.1f}"
    assert row[3] == f"{100 * float(epochs[-1]['train_top1']):.1f}"
    # Without HPO eta's base lr is the recipe's own.
    assert row[4] == "1.00"
    assert row[5].endswith(f"/{len(summary['genotype']['normal'])}")
    assert row[6] == f"{summary['params']:,}"
    assert row[7] == "-"


def test_a_dha_run_names_its_top_policy_pair(tmp_path: Path) -> None:
    text = (TINY_RECIPE.replace('channels = "1"', 'channels = "1"\ntrain_subset = 200')
            .replace('mode = "manual"\ncomponents = []',
                     'mode = "joint"\ncomponents = ["nas", "da", "hpo"]\nsearch_epochs = 1'))
    assert "train_subset" in text and 'mode = "joint"' in text
    recipe = str(write_recipe(tmp_path, text))
    assert main(["prepare", recipe]) == 0 and main(["search", recipe]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    summary = json.loads((run_dir / "search" / "summary.json").read_text())
    row = cells(load_bench_script("run_trajectories").trajectory_row(run_dir))
    assert len(row) == 8 and row[0] == "tiny"
    assert row[7] == next(iter(summary["da_policy"]))
    late = history(run_dir)[9 * len(history(run_dir)) // 10 - 1]
    assert row[4] == f"{float(late['lr']) / 0.05:.2f}" and float(late["lr"]) != 0.05, "HPO moved eta's base lr"


def test_no_finished_run_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no finished runs" in result.stderr
