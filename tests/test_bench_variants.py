"""bench/variants.py: which protocol rows are already measured, by space, variant, form and seed."""

from __future__ import annotations

from conftest import load_bench_script


def test_measured_rows_are_keyed_by_space_and_old_rows_count_as_the_cell_space(tmp_path):
    variants = load_bench_script("variants")
    csv_path = tmp_path / "variants.csv"
    variants.append_row(csv_path, {"variant": "dha", "form": "learned_fraction", "seed": 0, "space": "mobilenet"})
    variants.append_row(csv_path, {"variant": "manual", "form": "", "seed": 1, "space": ""})
    assert variants.measured(csv_path) == {("mobilenet", "dha", "learned_fraction", 0), ("darts", "manual", "", 1)}
    assert variants.measured(tmp_path / "absent.csv") == set()
