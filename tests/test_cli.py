"""The `dha` command line end to end: stage chaining, skipping, outputs, and user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_imagefolder, make_npz, write_recipe

from cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_run_writes_every_artifact(tiny_run: Path) -> None:
    run_dir, export_dir = tiny_run / "runs/tiny", tiny_run / "exports/tiny"
    for name in ("recipe.resolved.toml", "recipe.sha256", "history.csv", "checkpoints/last.pt", "search/result.pt",
                 "cache/manifest.json", "derived/child.pt", "search/genotype.json", "plots/learning_curves.png"):
        assert (run_dir / name).is_file(), name
    for name in ("model.onnx", "model.ts", "metadata.json", "evaluation.json", "MODEL_CARD.md",
                 "evaluation.confusion.png"):
        assert (export_dir / name).is_file(), name
    assert (run_dir / "plots/learning_curves.png").read_bytes().startswith(b"\x89PNG")
    evaluation = json.loads((export_dir / "evaluation.json").read_text())
    assert evaluation["backend"] == "onnxruntime" and evaluation["split"] == "test"
    assert evaluation["top1"] > 0.3, "two epochs on digits must beat chance (0.1) clearly"
    assert not list(export_dir.parent.glob(".*")), "no staging leftovers"


def test_second_run_skips_every_stage(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_run / "exports/tiny/model.onnx"
    before = model.stat().st_mtime_ns
    assert main(["run", str(tiny_run / "recipe.toml")]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") >= 5
    assert model.stat().st_mtime_ns == before


def test_changed_setting_redoes_only_affected_stages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path)
    args = ["run", str(recipe), "--set", "train.epochs=1", "--set", "export.formats=['onnx']"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--set", "evaluate.latency_runs=3"]) == 0
    out = capsys.readouterr().out
    for stage in ("prepare", "search", "derive", "export"):
        assert f"dha {stage} (skipped" in out
    assert "dha evaluate (skipped" not in out
    assert main([*args, "--set", "evaluate.latency_runs=3", "--force"]) == 0
    assert "(skipped" not in capsys.readouterr().out


def test_stage_commands_run_alone_from_a_run_directory(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    overrides = ["--set", "train.epochs=1"]
    assert main(["prepare", str(recipe), *overrides]) == 0
    assert main(["search", str(recipe), *overrides]) == 0
    run_dir = tmp_path / "runs/tiny"
    assert main(["search", str(run_dir), "--resume"]) == 0
    assert main(["derive", str(run_dir)]) == 0
    assert main(["export", str(run_dir), "--format", "onnx"]) == 0
    assert (tmp_path / "exports/tiny/model.onnx").is_file()
    assert not (tmp_path / "exports/tiny/model.ts").exists()
    assert main(["evaluate", str(tmp_path / "exports/tiny/model.onnx"), "--latency-runs", "2"]) == 0


def test_same_recipe_on_npz_and_imagefolder_data(tmp_path: Path) -> None:
    npz = make_npz(tmp_path / "data.npz", channels=3)
    folder = make_imagefolder(tmp_path / "folder")
    for spec in (f"npz:{npz}", f"imagefolder:{folder}"):
        recipe = write_recipe(tmp_path, name=f"{spec[:3]}.toml")
        args = ["run", str(recipe), "--set", f"data.dataset={spec}", "--set", "data.channels='auto'",
                "--set", "name=other", "--set", "train.epochs=1", "--set", "export.parity_samples=16",
                "--set", "data.val_fraction=0.25", "--force"]
        assert main(args) == 0, spec
        report = json.loads((tmp_path / "exports/other/evaluation.json").read_text())
        assert report["dataset"] == spec and report["num_samples"] > 0


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    ("name = \n[", "not valid TOML"),
    ('name = "x"\n[trian]\n', "did you mean 'train'"),
    ('name = "x"\n[train]\nepochs = "many"\n', "expected integer"),
    ('name = "x"\n[train]\nepochs = -3\n', "allowed range"),
    ('name = "x"\n[data]\ndataset = "mnist:/x"\n', "unknown dataset kind 'mnist'"),
    ('name = "x"\n[data]\ndataset = "imagefolder:/no/such/dir"\n', "is not a directory"),
    ('name = "x"\n[data]\ndataset = "npz:/no/such.npz"\n', "does not exist"),
])
def test_recipe_and_dataset_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         content: str | None, fragment: str) -> None:
    recipe = tmp_path / "r.toml"
    if content is not None:
        recipe.write_text(f'runs_dir = "{tmp_path / "runs"}"\n' + content)
    assert main(["prepare", str(recipe)]) == 2
    assert fragment in _error_line(capsys)
    assert not list((tmp_path / "runs").rglob("*.npy")) if (tmp_path / "runs").exists() else True


def test_bad_npz_and_corrupt_image_exit_2_and_write_no_cache(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    recipe = write_recipe(tmp_path)
    missing = make_npz(tmp_path / "missing.npz", y_test=None)
    mismatched = make_npz(tmp_path / "mismatched.npz", y_train=np.zeros(5, dtype=np.int64))
    folder = make_imagefolder(tmp_path / "folder")
    bad = folder / "train" / "cat" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    for spec, fragment in ((f"npz:{missing}", "missing keys ['y_test']"),
                           (f"npz:{mismatched}", "60 images but y_train has 5 labels"),
                           (f"imagefolder:{folder}", str(bad))):
        assert main(["prepare", str(recipe), "--set", f"data.dataset={spec}"]) == 2
        assert fragment in _error_line(capsys)
    assert not (tmp_path / "runs/tiny/cache/manifest.json").exists()
    assert main(["prepare", str(recipe), "--set", f"data.dataset=imagefolder:{folder}", "--skip-bad"]) == 0
    manifest = json.loads((tmp_path / "runs/tiny/cache/manifest.json").read_text())
    assert manifest["bad_files"] == [str(bad)]


def test_unknown_flag_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "recipes/digits_quickstart.toml", "--frobnicate"]) == 2
    assert "--frobnicate" in _error_line(capsys)


def test_console_script_user_error_has_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "cli.main", "run", str(tmp_path / "missing.toml")],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_quickstart_recipe_meets_the_bar(tmp_path: Path) -> None:
    """The README's main command (full DHA) reaches >= 97% top-1 by onnxruntime on the test split."""
    args = ["run", str(ROOT / "recipes/digits_quickstart.toml"), "--set", f"runs_dir='{tmp_path / 'runs'}'",
            "--set", f"exports_dir='{tmp_path / 'exports'}'"]
    assert main(args) == 0
    export_dir = tmp_path / "exports/digits_quickstart"
    for name in ("model.onnx", "model.ts", "metadata.json", "evaluation.json"):
        assert (export_dir / name).is_file()
    evaluation = json.loads((export_dir / "evaluation.json").read_text())
    assert evaluation["backend"] == "onnxruntime" and evaluation["split"] == "test"
    assert evaluation["top1"] >= 0.97
    metadata = json.loads((export_dir / "metadata.json").read_text())
    assert metadata["mode"] == "joint" and metadata["components"] == ["da", "hpo", "nas"]
    assert max(metadata["da_policy"].values()) > 2 / 196, "the learned policy left the uniform one"
    hyper = metadata["hyperparameters"]
    assert hyper["learned"] is True and hyper["schedule"]["kind"] == "cosine"
    assert hyper["lr"] != 0.05 and hyper["weight_decay"] != 3e-4
    assert 0.01 < hyper["lr"] < 0.5, "eta's base lr is reported, not the cosine-scheduled lr near 0 at the end"
    assert hyper["lr_from_batch"]["factor"] == 1.0, "the quickstart runs at the batch its lr is stated for"
    assert len(metadata["genotype"]["normal"]) == 8 and len(metadata["genotype"]["reduce"]) == 8
    run_dir = tmp_path / "runs/digits_quickstart"
    for name in ("search/policy.csv", "search/hparams.csv", "search/arch.csv", "plots/policy_heatmap.png",
                 "plots/hparams.png", "plots/arch_weights.png", "plots/architecture.png"):
        assert (run_dir / name).is_file(), name


def test_run_with_torchscript_only_evaluates_the_torchscript_model(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    recipe = write_recipe(tmp_path)
    assert main(["run", str(recipe), "--set", "train.epochs=1", "--set", 'export.formats=["torchscript"]']) == 0
    export_dir = tmp_path / "exports/tiny"
    assert not (export_dir / "model.onnx").exists()
    report = json.loads((export_dir / "evaluation.json").read_text())
    assert report["backend"] == "torchscript" and report["model"] == str(export_dir / "model.ts")
    assert "| class | fp32 (test) |" in (export_dir / "MODEL_CARD.md").read_text()
    out = capsys.readouterr().out
    assert f"dha evaluate {export_dir / 'model.ts'}" in out and "dha predict" not in out


def test_evaluate_stage_reads_the_prepared_split_not_the_source(tmp_path: Path) -> None:
    from dha_pipeline import stages

    npz = make_npz(tmp_path / "data.npz", n_test=30)
    recipe_path = write_recipe(tmp_path)
    overrides = [f"data.dataset=npz:{npz}", "train.epochs=1", "data.val_fraction=0.25", "export.parity_samples=16"]
    assert main(["run", str(recipe_path), *sum((["--set", o] for o in overrides), [])]) == 0
    npz.unlink()  # the raw source is gone: only runs/tiny/cache/ can feed the evaluation now
    report = stages.evaluate(stages.resolve_recipe(recipe_path, overrides), force=True)
    assert not report.skipped and report.warnings == []
    (evaluation,) = report.data["evaluations"]
    assert evaluation["report"]["dataset"] == f"npz:{npz}" and evaluation["report"]["num_samples"] == 30


def test_logs_written_to_a_file_keep_whole_lines(tmp_path: Path) -> None:
    """Not a terminal (CI, nohup): one whole plain line per epoch, and summaries that are not cut at 80 columns."""
    recipe = write_recipe(tmp_path)
    log = tmp_path / "run.log"
    with open(log, "w") as handle:
        result = subprocess.run([sys.executable, "-m", "cli.main", "run", str(recipe), "--set", "train.epochs=2"],
                                cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=600,
                                env={k: v for k, v in os.environ.items() if k != "COLUMNS"})
    assert result.returncode == 0
    text = log.read_text()
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    for line in epochs:
        for field in (" train ", " val ", " loss ", " lr ", " wd ", " frozen "):
            assert field in line, (field, line)
        assert line.endswith(" s") and "…" not in line
    assert "…" not in text and "━" not in text, "no cut cells, no progress-bar frames"
    model = tmp_path / "exports/tiny/model.onnx"
    assert f"  dha evaluate {model} --data digits --split test" in text
    assert len(max(text.splitlines(), key=len)) > 80, "long lines stay whole"
