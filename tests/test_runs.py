"""Runs kept apart and compared: a second run under a taken name with other training settings is refused with the
fix, `dha run --new-name` numbers it instead, and `dha runs` tables every run (and writes the CSV)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import write_recipe

from cli.main import main
from dha_pipeline.recipe import recipe_from_dict
from dha_pipeline.runs_index import COLUMNS, run_table
from dha_pipeline.stages import fresh_name


def test_a_taken_name_with_other_settings_is_refused_then_numbered(tmp_path: Path, tiny_run: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(tiny_run / "runs", tmp_path / "runs")  # the shared run stays untouched
    recipe = write_recipe(tmp_path)
    before = (tmp_path / "runs/tiny/recipe.resolved.toml").read_text()
    assert main(["run", str(recipe), "--set", "train.epochs=1"]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "run 'tiny' already exists" in error[0] and "(train)" in error[0]
    assert "--new-name" in error[0] and "--force" in error[0]
    assert (tmp_path / "runs/tiny/recipe.resolved.toml").read_text() == before, "nothing of the first run changed"

    assert main(["run", str(recipe), "--set", "train.epochs=1", "--set", "export.formats=['onnx']",
                 "--new-name"]) == 0
    assert (tmp_path / "runs/tiny-2/search/summary.json").is_file()
    assert (tmp_path / "exports/tiny-2/evaluation.json").is_file()
    assert (tmp_path / "runs/tiny/recipe.resolved.toml").read_text() == before

    assert main(["runs", str(tmp_path / "runs"), "--sort", "name", "--descending"]) == 0
    out = capsys.readouterr().out
    assert "tiny-2" in out and "done" in out
    rows = list(csv.DictReader((tmp_path / "runs/runs.csv").open()))
    assert [row["name"] for row in rows] == ["tiny-2", "tiny"] and tuple(rows[0]) == COLUMNS
    assert all(row["status"] == "done" and float(row["test_top1"]) > 0 and int(row["params"]) > 0 for row in rows)
    assert float(rows[0]["wall_s"]) > 0 and float(rows[0]["latency_ms"]) > 0


def test_fresh_name_and_the_table_of_unfinished_runs(tmp_path: Path) -> None:
    recipe = recipe_from_dict({"name": "exp", "runs_dir": str(tmp_path)})
    assert fresh_name(recipe).name == "exp"
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp-2").mkdir()
    assert fresh_name(recipe).name == "exp-3"
    (tmp_path / "exp" / "recipe.resolved.toml").write_text('name = "exp"\n[train]\nepochs = 3\n')
    (tmp_path / "exp-2" / "recipe.resolved.toml").write_text("not toml [")
    rows = run_table(tmp_path, sort="params")
    assert [(row["name"], row["status"]) for row in rows] == [("exp", "started"),
                                                              ("exp-2", "unreadable recipe.resolved.toml")]
    assert main(["runs", str(tmp_path), "--sort", "speed"]) == 2
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
