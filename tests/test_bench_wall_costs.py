"""bench/wall_costs.py: wall times are compared only within a session, and only clean runs count."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import BENCH, load_bench_script

SCRIPT = BENCH / "wall_costs.py"


def row(session: str, variant: str, seed: int, wall: float, alone: str = "yes") -> dict[str, str]:
    return {"session": session, "variant": variant, "seed": str(seed), "wall_s": str(wall), "alone": alone}


def test_costs_divide_by_the_reference_of_the_same_session():
    wall_costs = load_bench_script("wall_costs")
    rows = [
        row("1", "nas_only", 0, 1000.0), row("1", "dha", 0, 1200.0),
        row("2", "nas_only", 1, 500.0), row("2", "nas_only", 2, 700.0), row("2", "dha", 1, 660.0),
    ]
    costs = wall_costs.relative_costs(rows, "nas_only")
    assert costs["dha"] == [("1", 0, pytest.approx(1.2)), ("2", 1, pytest.approx(1.1))]
    assert [ratio for _, _, ratio in costs["nas_only"]] == pytest.approx([1.0, 500 / 600, 700 / 600])


def test_contended_runs_and_sessions_without_a_clean_reference_are_left_out():
    wall_costs = load_bench_script("wall_costs")
    rows = [
        row("1", "nas_only", 0, 1000.0), row("1", "dha", 0, 3000.0, alone="no (shared the cores)"),
        row("2", "nas_only", 0, 400.0, alone="no"), row("2", "dha", 1, 900.0),
        row("3", "manual", 0, 700.0),
    ]
    costs = wall_costs.relative_costs(rows, "nas_only")
    assert set(costs) == {"nas_only"}
    assert [session for session, _, _ in costs["nas_only"]] == ["1"]


def test_a_log_without_the_reference_variant_is_refused_with_exit_2(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("session,variant,seed,wall_s,alone\n1,dha,0,900,yes\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(log), "--reference", "nas_only"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "--reference nas_only" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_log_with_missing_columns_is_refused_with_exit_2(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("session,variant,wall_s\n1,dha,900\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(log)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "seed" in result.stderr and "alone" in result.stderr
    assert "Traceback" not in result.stderr
