"""bench/variants.py: which protocol rows are already measured, by space, variant, form and seed; rows
appended to older files."""

from __future__ import annotations

import csv

from conftest import load_bench_script


def test_measured_rows_are_keyed_by_space_and_old_rows_count_as_the_cell_space(tmp_path):
    variants = load_bench_script("variants")
    csv_path = tmp_path / "variants.csv"
    variants.append_row(csv_path, {"variant": "dha", "form": "learned_fraction", "seed": 0, "space": "mobilenet"})
    variants.append_row(csv_path, {"variant": "manual", "form": "", "seed": 1, "space": ""})
    assert variants.measured(csv_path) == {("mobilenet", "dha", "learned_fraction", 0), ("darts", "manual", "", 1)}
    assert variants.measured(tmp_path / "absent.csv") == set()


def test_a_row_appended_to_an_older_file_keeps_that_files_columns(tmp_path):
    variants = load_bench_script("variants")
    csv_path = tmp_path / "old.csv"
    csv_path.write_text("variant,form,seed,top1\nmanual,,0,0.5\n")
    variants.append_row(csv_path, {"variant": "dha_ta", "form": "paper", "seed": 1, "top1": 0.6,
                                   "start": "trivial_wide", "policy_kl": 0.01})
    rows = list(csv.DictReader(open(csv_path, newline="")))
    assert rows[1] == {"variant": "dha_ta", "form": "paper", "seed": "1", "top1": "0.6"}
