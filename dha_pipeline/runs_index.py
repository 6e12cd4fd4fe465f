"""`dha runs [DIR]`: one row per run under a runs folder (name, space, mode, components, params, MACs, measured
latency, val and test top-1, wall time, status), read from the files the stages wrote, and kept as CSV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dha_pipeline.errors import DhaError
from dha_pipeline.layout import RunLayout
from dha_pipeline.metrics import write_csv
from dha_pipeline.recipe import load_recipe
from dha_pipeline.stages import STAGE_ORDER

COLUMNS = ("name", "space", "mode", "components", "params", "macs", "latency_ms", "val_top1", "test_top1",
           "wall_s", "status")
"""The table's columns; `latency_ms` is the evaluation's measured batch-1 median (onnxruntime)."""


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _status(layout: RunLayout) -> str:
    """The last stage that finished ('evaluated' = all), or where an unfinished search stands."""
    done = [stage for stage in STAGE_ORDER if layout.stamp(stage).is_file()]
    if len(done) == len(STAGE_ORDER):
        return "done"
    if "search" not in done and layout.checkpoint.is_file():
        return "searching or stopped (checkpoint; --resume continues)"
    return f"{done[-1]} done" if done else "started"


def _exports_layout(run_dir: Path, runs_dir: Path, exports_dir: str) -> RunLayout:
    """The run's layout; a relative exports_dir is taken from here, else next to the runs folder."""
    exports = Path(exports_dir)
    if not exports.is_absolute() and not (exports / run_dir.name).is_dir():
        exports = runs_dir.parent / exports_dir
    return RunLayout.of(runs_dir, exports, run_dir.name)


def run_row(run_dir: Path) -> dict[str, Any]:
    """One run's row (missing values are empty: a run that has not searched or been evaluated yet)."""
    runs_dir = run_dir.parent
    row: dict[str, Any] = dict.fromkeys(COLUMNS, "")
    row["name"] = run_dir.name
    try:
        recipe = load_recipe(RunLayout.of(runs_dir, "", run_dir.name).resolved_recipe)
    except DhaError:
        row["status"] = "unreadable recipe.resolved.toml"
        return row
    layout = _exports_layout(run_dir, runs_dir, recipe.exports_dir)
    row.update(space=recipe.model.space, mode=recipe.search.mode, components="+".join(recipe.search.components),
               status=_status(layout))
    summary = _json(layout.summary)
    if summary:
        row.update(params=summary["params"], macs=summary["macs"], wall_s=round(float(summary["seconds"]), 1),
                   val_top1=summary.get("final", {}).get("val_top1", ""))
    evaluation = _json(layout.exports.evaluation)
    if evaluation:
        row.update(test_top1=evaluation["top1"], latency_ms=evaluation["latency_ms"]["batch1_p50"])
    return row


def run_table(runs_dir: str | Path, sort: str | None = None, descending: bool = False) -> list[dict[str, Any]]:
    """Every run under `runs_dir` (a folder holding recipe.resolved.toml), sorted by `sort` (empty values last)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DhaError(f"runs folder '{runs_dir}' does not exist", "pass the folder your runs are in (runs_dir)")
    if sort is not None and sort not in COLUMNS:
        raise DhaError(f"cannot sort by '{sort}'", "use one of: " + ", ".join(COLUMNS))
    rows = [run_row(path) for path in sorted(runs_dir.iterdir()) if (path / "recipe.resolved.toml").is_file()]
    if sort is not None:
        present = [row for row in rows if row[sort] != ""]
        present.sort(key=lambda row: row[sort], reverse=descending)
        rows = present + [row for row in rows if row[sort] == ""]
    return rows


def write_run_table(rows: list[dict[str, Any]], path: str | Path) -> None:
    """The table as CSV (atomically)."""
    write_csv(path, [{column: row[column] for column in COLUMNS} for row in rows])
