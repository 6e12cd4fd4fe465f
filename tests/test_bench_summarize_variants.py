"""bench/summarize_variants.py: the paired table compares a variant with each other one seed by seed."""

from __future__ import annotations

import subprocess
import sys

from conftest import BENCH, load_bench_script

SCRIPT = BENCH / "summarize_variants.py"
HEADER = "variant,seed,top1,top5,wall_s,params,macs,onnx_top1,torch_top1\n"


def row(variant: str, seed: int, top1: float, wall: float) -> dict[str, str]:
    return {"variant": variant, "seed": str(seed), "top1": str(top1), "wall_s": str(wall), "params": "10"}


ROWS = [row("dha", 0, 0.50, 200.0), row("dha", 1, 0.40, 200.0), row("dha", 2, 0.45, 200.0),
        row("manual", 0, 0.45, 100.0), row("manual", 1, 0.40, 300.0), row("nas_only", 5, 0.9, 100.0)]


def test_paired_table_uses_only_shared_seeds_and_counts_ahead_tied_behind():
    lines = load_bench_script("summarize_variants").paired_table(ROWS, "dha")
    assert len(lines) == 3  # header, rule, manual; nas_only shares no seed with dha
    assert lines[2] == "| manual | 0 1 | +5.00 / +0.00 | +2.50 | 1 / 1 / 0 | 1.00 |"


def test_paired_table_without_wall_drops_the_ratio_column():
    lines = load_bench_script("summarize_variants").paired_table(ROWS, "dha", with_wall=False)
    assert "wall" not in lines[0]
    assert lines[2] == "| manual | 0 1 | +5.00 / +0.00 | +2.50 | 1 / 1 / 0 |"
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_no_wall_flag_leaves_wall_out_of_both_tables(tmp_path):
    csv_path = tmp_path / "variants.csv"
    csv_path.write_text(HEADER + "".join(f"{r['variant']},{r['seed']},{r['top1']},1.0,{r['wall_s']},10,1,"
                                         f"{r['top1']},{r['top1']}\n" for r in ROWS))
    result = subprocess.run([sys.executable, str(SCRIPT), str(csv_path), "--paired", "dha", "--no-wall"],
                            capture_output=True, text=True, check=True)
    assert "wall" not in result.stdout
    assert "| dha | 3 | 45.00 +- 5.00 | 40.00 | 50.00 | 10 |" in result.stdout
    with_wall = subprocess.run([sys.executable, str(SCRIPT), str(csv_path), "--paired", "dha"],
                               capture_output=True, text=True, check=True)
    assert "wall s" in with_wall.stdout and "wall ratio" in with_wall.stdout


def test_unknown_paired_variant_is_refused_with_exit_2(tmp_path):
    csv_path = tmp_path / "variants.csv"
    csv_path.write_text(HEADER + "dha,0,0.5,1.0,10,10,1,0.5,0.5\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(csv_path), "--paired", "dhaa"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "--paired dhaa" in result.stderr and "Traceback" not in result.stderr


def test_runs_are_named_by_form_and_show_val_and_p_where_recorded(tmp_path):
    csv_path = tmp_path / "variants.csv"
    header = ("variant,form,seed,top1,top5,wall_s,params,macs,onnx_top1,torch_top1,aug_fraction,val_top1,"
              "train_clean_top1\n")
    csv_path.write_text(header + "dha,paper,0,0.5,1,10,10,1,0.5,0.5,1.0,,\n"
                        "dha,learned_fraction,0,0.6,1,10,10,1,0.6,0.6,0.25,0.55,0.9\n"
                        "nas_only,,0,0.4,1,10,10,1,0.4,0.4,,0.45,0.99\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(csv_path), "--paired", "dha", "--no-wall"],
                            capture_output=True, text=True, check=True)
    assert "| dha:paper | 1 | 50.00 +- 0.00 | 50.00 | 50.00 | 10 | - | 1.00 |" in result.stdout
    assert "| dha | 1 | 60.00 +- 0.00 | 60.00 | 60.00 | 10 | 55.00 | 0.25 |" in result.stdout
    assert "| nas_only | 1 | 40.00 +- 0.00 | 40.00 | 40.00 | 10 | 45.00 | - |" in result.stdout
    assert "| dha:paper | 0 | +10.00 | +10.00 | 1 / 0 / 0 |" in result.stdout


def test_a_row_without_wall_time_leaves_only_its_ratio_out():
    rows = [*ROWS, {**row("nas_hpo", 0, 0.40, 1.0), "wall_s": ""}]
    lines = load_bench_script("summarize_variants").paired_table(rows, "dha")
    assert lines[-1] == "| nas_hpo | 0 | +10.00 | +10.00 | 1 / 0 / 0 | - |"
    assert lines[2].endswith("| 1.00 |")  # manual's ratio is still there


def test_runs_outside_the_cell_space_are_named_by_their_space():
    label = load_bench_script("summarize_variants").run_label
    assert label({"variant": "dha", "form": "learned_fraction", "space": "mobilenet"}) == "mobilenet/dha"
    assert label({"variant": "dha", "form": "paper", "space": "darts"}) == "dha:paper"
    assert label({"variant": "manual", "form": ""}) == "manual"  # a CSV from before the space column
