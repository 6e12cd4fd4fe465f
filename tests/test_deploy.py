"""Deployment depth: the int8 model and its gate, the PyTorch 2 format, `dha benchmark`, and the model card
(its onnxruntime snippet is run), on the shared tiny run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from cli.main import main
from conftest import INT8_MAX_DROP
from dha_pipeline.benchmark import BenchmarkRow, enforce_min_top1
from dha_pipeline.data.batches import ArraySource, spread_images
from dha_pipeline.derive import load_child
from dha_pipeline.errors import CheckFailed, DhaError
from dha_pipeline.evaluate import evaluate_file
from dha_pipeline.export import exporter
from dha_pipeline.export.int8 import Int8Check, enforce_int8_gate
from dha_pipeline.formats import registry
from dha_pipeline.formats.metadata import METADATA_KEY
from dha_pipeline.formats.onnx_runtime import OnnxBackend, onnx_providers, read_onnx_metadata
from dha_pipeline.formats.pt2 import Pt2Backend, load_pt2
from dha_pipeline.formats.registry import FORMATS, load_backend
from dha_pipeline.predict import predict
from dha_pipeline.preprocess import model_input
from dha_pipeline.report.model_card import human_count, onnx_snippet

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARK_COLUMNS = {"format", "label", "file", "size_mb", "backend", "provider", "threads", "top1",
                     "balanced_accuracy", "macro_f1", "batch1_p50_ms", "batch1_p90_ms", "batch32_images_per_s", "runs",
                     "split", "num_samples", "machine"}


@pytest.fixture(scope="module")
def metadata(int8_export: Path) -> dict:
    return json.loads((int8_export / "metadata.json").read_text())


@pytest.fixture(scope="module")
def benchmarked(int8_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the int8 export after `dha benchmark --data digits --runs 50 --threads 1 --min-top1 0.05`."""
    folder = tmp_path_factory.mktemp("benchmarked") / "tiny"
    shutil.copytree(int8_export, folder)
    assert main(["benchmark", str(folder), "--data", "digits", "--runs", "50", "--threads", "1",
                 "--min-top1", "0.05"]) == 0  # a floor every format clears
    return folder


def digit_images(folder: Path, count: int = 3) -> list[Path]:
    """sklearn digits as 8-bit grayscale PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, digit in enumerate(load_digits().images[:count]):
        path = folder / f"digit_{i}.png"
        Image.fromarray(np.round(digit * (255.0 / 16)).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


def copy_run(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of runs/tiny/ and the exports folder its commands should write to."""
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_run / "runs" / "tiny", run)
    return run, tmp_path / "exports"


# --------------------------------------------------------------------------- int8


def test_int8_export_writes_a_quantized_model_with_the_same_metadata(int8_export: Path, metadata: dict) -> None:
    path = int8_export / "model.int8.onnx"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    weights = {init.name: init for init in proto.graph.initializer}
    conv_weights = {name for name, init in weights.items() if init.data_type == onnx.TensorProto.INT8
                    and len(init.dims) == 4}
    conv_scales = [weights[node.input[1]] for node in proto.graph.node
                   if node.op_type == "DequantizeLinear" and node.input[0] in conv_weights]
    assert conv_scales and any(len(scale.dims) == 1 and scale.dims[0] > 1 for scale in conv_scales)  # per channel
    embedded = {k: v for k, v in read_onnx_metadata(path).items() if k != "onnx_exporter"}
    assert embedded == metadata
    assert {k: v for k, v in read_onnx_metadata(int8_export / "model.onnx").items() if k != "onnx_exporter"} == metadata


def test_int8_metadata_records_the_gate(metadata: dict) -> None:
    int8 = metadata["int8"]
    assert int8["format"] == "QDQ" and "per channel" in int8["weights"]
    assert int8["num_samples"] == 144  # the whole val split
    assert int8["calibration_images"] == 512  # export.int8_calibration_images, spread over 1,293 train images
    assert int8["max_drop_points"] == INT8_MAX_DROP  # the fixture's export.int8_max_drop
    assert int8["drop_points"] == pytest.approx(100 * (int8["fp32_top1"] - int8["int8_top1"]))
    assert int8["drop_points"] <= INT8_MAX_DROP
    assert 0.9 <= int8["agreement"] <= 1.0
    assert int8["parity"]["num_samples"] == metadata["parity"]["num_samples"]


def test_int8_gate_is_measured_on_val(int8_export: Path, metadata: dict, tiny_run: Path) -> None:
    report = evaluate_file(int8_export / "model.int8.onnx", split="val", latency_runs=1,
                           out=int8_export.parent / "int8_val.json").report
    assert report["top1"] == pytest.approx(metadata["int8"]["int8_top1"])
    assert report["num_samples"] == metadata["int8"]["num_samples"]


def test_int8_gate_limits() -> None:
    check = Int8Check(fp32_top1=0.90, int8_top1=0.885, agreement=0.95, num_samples=200, calibration_images=300)
    assert check.drop_points == pytest.approx(1.5)
    enforce_int8_gate(check, 1.5)  # inclusive
    with pytest.raises(CheckFailed, match=r"drop of 1\.50 points \(limit export\.int8_max_drop = 1\)"):
        enforce_int8_gate(check, 1.0)
    gain = Int8Check(0.80, 0.81, 0.97, 100, 300)
    enforce_int8_gate(gain, 0.0)


def test_cli_int8_gate_failure_exits_1_and_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         tiny_run: Path, int8_export: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run, exports = copy_run(tiny_run, tmp_path)
    monkeypatch.setattr(exporter, "check_int8", lambda *args: Int8Check(0.90, 0.70, 0.75, 144, 512))
    code = main(["export", str(run), "--int8", "--force", "--format", "onnx",
                 "--set", f"exports_dir={json.dumps(str(exports))}"])
    assert code == 1
    assert "int8 export failed its accuracy gate" in capsys.readouterr().err
    assert not (exports / "tiny").exists() or list((exports / "tiny").iterdir()) == []
    # an earlier export is left as it was
    earlier = tmp_path / "earlier" / "tiny"
    shutil.copytree(int8_export, earlier)
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    code = main(["export", str(run), "--int8", "--force", "--format", "onnx",
                 "--set", f"exports_dir={json.dumps(str(earlier.parent))}"])
    assert code == 1
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before


def test_cli_int8_needs_the_onnx_format(tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, exports = copy_run(tiny_run, tmp_path)
    code = main(["export", str(run), "--int8", "--format", "torchscript",
                 "--set", f"exports_dir={json.dumps(str(exports))}"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "export.int8 quantizes the ONNX model" in lines[0]


def test_few_calibration_images_warn(tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, exports = copy_run(tiny_run, tmp_path)
    code = main(["export", str(run), "--int8", "--format", "onnx", "--set", "export.int8_calibration_images=64",
                 "--set", f"export.int8_max_drop={INT8_MAX_DROP}",
                 "--set", f"exports_dir={json.dumps(str(exports))}"])
    assert code == 0
    assert "calibrated on only 64 training images" in capsys.readouterr().err
    assert json.loads((exports / "tiny" / "metadata.json").read_text())["int8"]["calibration_images"] == 64


def test_spread_images_covers_a_split_stored_in_class_order() -> None:
    labels = np.repeat(np.arange(10), 30)
    images = labels.astype(np.uint8).reshape(-1, 1, 1, 1)
    spread = spread_images(ArraySource(images, labels), 20)
    assert len(spread) == 20
    assert set(spread.ravel().tolist()) == set(range(10))
    assert len(spread_images(ArraySource(images, labels), 1000)) == 300


def test_reexport_without_int8_removes_the_int8_model_and_old_reports(tmp_path: Path, tiny_run: Path,
                                                                     int8_export: Path) -> None:
    run, exports = copy_run(tiny_run, tmp_path)
    shutil.copytree(int8_export, exports / "tiny")
    (exports / "tiny" / "evaluation.json").write_text("{}")
    (exports / "tiny" / "benchmark.csv").write_text("format\n")
    assert main(["export", str(run), "--force", "--set", f"exports_dir={json.dumps(str(exports))}"]) == 0
    names = {p.name for p in (exports / "tiny").iterdir()}
    assert "model.int8.onnx" not in names and "evaluation.json" not in names and "benchmark.csv" not in names
    assert "model.pt2" not in names  # the tiny recipe's formats are onnx and torchscript
    assert {"model.onnx", "model.ts", "metadata.json", "MODEL_CARD.md", "network.png"} <= names


def test_predict_works_on_the_int8_model(int8_export: Path, tmp_path: Path) -> None:
    paths = digit_images(tmp_path / "digits")
    fp32 = predict(int8_export / "model.onnx", [tmp_path / "digits"], top_k=1)
    int8 = predict(int8_export / "model.int8.onnx", [tmp_path / "digits"], top_k=1)
    assert [p.path for p in int8.predictions] == [str(p) for p in paths]
    agree = [a.top[0][0] == b.top[0][0] for a, b in zip(fp32.predictions, int8.predictions)]
    assert sum(agree) >= 2


# --------------------------------------------------------------------------- the PyTorch 2 format


def test_pt2_round_trip_with_a_dynamic_batch(int8_export: Path, metadata: dict, tiny_run: Path) -> None:
    child = load_child(tiny_run / "runs" / "tiny" / "derived" / "child.pt")
    module, embedded = load_pt2(int8_export / "model.pt2")
    assert embedded == metadata
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3, 32):
        x = torch.randn(batch, 1, 8, 8, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(module(x), child.model.eval()(x), rtol=1e-5, atol=1e-5)
    parity = metadata["parity"]["by_format"]["pt2"]
    assert parity["max_abs_diff"] <= 1e-3 and parity["top1_agreement"] == 1.0


def test_pt2_evaluates_like_onnx(int8_export: Path, tmp_path: Path) -> None:
    assert isinstance(load_backend(int8_export / "model.pt2"), Pt2Backend)
    pt2 = evaluate_file(int8_export / "model.pt2", latency_runs=1, out=tmp_path / "pt2.json").report
    onnx_report = evaluate_file(int8_export / "model.onnx", latency_runs=1, out=tmp_path / "onnx.json").report
    assert pt2["backend"] == "torch.export"
    assert pt2["top1"] == onnx_report["top1"] and pt2["confusion_matrix"] == onnx_report["confusion_matrix"]


def test_pt2_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.pt2"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(DhaError, match="is not a valid PyTorch 2 model"):
        load_pt2(bad)
    code = main(["evaluate", str(bad), "--data", "digits"])
    assert code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_pt2_parity_failure_fails_the_export(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_run: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses

    real = registry.FORMATS["pt2"]

    def shifted(path: Path, runtime):
        run = real.loader(path, runtime)
        return lambda batch: run(batch) + 1.0

    monkeypatch.setitem(registry.FORMATS, "pt2", dataclasses.replace(real, loader=shifted))
    run, exports = copy_run(tiny_run, tmp_path)
    code = main(["export", str(run), "--force", "--format", "pt2", "--set", f"exports_dir={json.dumps(str(exports))}"])
    assert code == 1 and "pt2 export failed the parity gate" in capsys.readouterr().err
    assert not (exports / "tiny").exists() or list((exports / "tiny").iterdir()) == []


# --------------------------------------------------------------------------- dha benchmark


def read_benchmark(folder: Path) -> list[dict[str, str]]:
    with (folder / "benchmark.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_benchmark_measures_every_format(benchmarked: Path, int8_export: Path) -> None:
    rows = read_benchmark(benchmarked)
    assert [row["format"] for row in rows] == list(FORMATS)  # torch eager, TorchScript, .pt2, ONNX, int8
    assert [row["label"] for row in rows] == ["torch eager", "TorchScript", "PyTorch 2 (.pt2)", "ONNX fp32",
                                              "ONNX int8"]
    assert set(rows[0]) == BENCHMARK_COLUMNS
    for row in rows:
        assert row["split"] == "test" and int(row["num_samples"]) == 360
        assert int(row["threads"]) == 1 and int(row["runs"]) == 50
        assert float(row["batch1_p90_ms"]) >= float(row["batch1_p50_ms"]) > 0
        assert float(row["batch32_images_per_s"]) > 0
        assert 0.0 <= float(row["top1"]) <= 1.0
    by_format = {row["format"]: row for row in rows}
    assert by_format["onnx"]["file"] == "model.onnx" and by_format["torch"]["file"] == "child.pt"
    assert float(by_format["onnx"]["size_mb"]) == pytest.approx((int8_export / "model.onnx").stat().st_size / 1e6)
    fp32 = {by_format[f]["top1"] for f in ("torch", "torchscript", "pt2", "onnx")}
    assert len(fp32) == 1  # the same model, the same front end, the same images
    assert by_format["onnx"]["provider"] == "CPUExecutionProvider" and by_format["torch"]["provider"] == "cpu"
    assert (benchmarked / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_top1_matches_evaluate(benchmarked: Path, tmp_path: Path) -> None:
    rows = {row["format"]: row for row in read_benchmark(benchmarked)}
    for fmt, name in (("onnx", "model.onnx"), ("onnx_int8", "model.int8.onnx")):
        report = evaluate_file(benchmarked / name, latency_runs=1, out=tmp_path / f"{fmt}.json").report
        assert float(rows[fmt]["top1"]) == pytest.approx(report["top1"])


def test_benchmark_fills_the_model_card(benchmarked: Path) -> None:
    card = (benchmarked / "MODEL_CARD.md").read_text()
    assert "## Latency" in card and "| ONNX int8 | `model.int8.onnx` |" in card and "| torch eager |" in card
    assert "batch-1 latency, median (dha benchmark)" in card
    # not evaluated yet: the per-class table comes from the benchmark's scores of both ONNX models
    saved = json.loads((benchmarked / "benchmark.json").read_text())
    assert saved["split"] == "test" and set(saved["per_class_top1"]) == set(FORMATS)
    assert "| class | fp32 (test) | int8 (test) |" in card
    onnx_row = next(row for row in saved["rows"] if row["format"] == "onnx")
    assert f"| top-1 on the test split | {100 * onnx_row['top1']:.1f} % |" in card


def test_benchmark_min_top1(benchmarked: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "tiny"
    shutil.copytree(benchmarked, folder)
    best = max(float(row["top1"]) for row in read_benchmark(folder))
    assert best < 0.99  # the tiny 2-epoch model
    assert main(["benchmark", str(folder), "--data", "digits", "--runs", "50", "--threads", "1",
                 "--min-top1", "0.99"]) == 1
    assert "top-1 below --min-top1 0.99" in capsys.readouterr().err
    assert (folder / "benchmark.csv").is_file()  # the measurements are kept: the floor judges them
    row = BenchmarkRow("onnx", "ONNX fp32", "model.onnx", 1.0, "onnxruntime", "cpu", 1, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0,
                       50, "test", 10, "m")
    with pytest.raises(CheckFailed, match="ONNX fp32 50.00%"):
        enforce_min_top1([row], 0.6)
    enforce_min_top1([row], 0.5)


@pytest.mark.parametrize("arguments, message", [
    (["--provider", "TPUExecutionProvider"], "provider 'TPUExecutionProvider' is not installed"),
    (["--runs", "10"], "--runs 10 is too few"),
    (["--split", "holdout"], "'holdout' is not one of 'train', 'val', 'test'"),
])
def test_benchmark_bad_flags(benchmarked: Path, capsys: pytest.CaptureFixture[str], arguments: list[str],
                             message: str) -> None:
    assert main(["benchmark", str(benchmarked), "--data", "digits", *arguments]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_benchmark_needs_an_export_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", str(tmp_path), "--data", "digits"]) == 2
    assert "is not an export folder" in capsys.readouterr().err


def test_onnx_provider_choice() -> None:
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers()[-1] == "CPUExecutionProvider"
    with pytest.raises(DhaError, match="not installed"):
        onnx_providers("NoSuchExecutionProvider")


# --------------------------------------------------------------------------- the model card


def card_snippet(card: str) -> str:
    """The python block of the card's 'How to call it' section."""
    match = re.search(r"```python\n(.*?)```", card, re.S)
    assert match is not None
    return match.group(1)


def run_snippet(code: str, folder: Path) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_model_card_snippet_runs_and_agrees_with_predict(int8_export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "deployed"
    shutil.copytree(int8_export, folder)
    code = card_snippet((folder / "MODEL_CARD.md").read_text())
    assert len([line for line in code.splitlines() if line.strip()]) <= 11
    for path in digit_images(tmp_path / "digits", 3):
        shutil.copy(path, folder / "image.png")
        printed = run_snippet(code + "\nprint(*logits.tolist())\n", folder)
        expected = predict(folder / "model.onnx", [folder / "image.png"], top_k=1).predictions[0]
        assert printed[0] == expected.top[0][0]
        backend = OnnxBackend(folder / "model.onnx", provider="cpu")
        spec = backend.metadata["input"]
        from dha_pipeline.preprocess import prepare_image, read_image

        grid = prepare_image(read_image(folder / "image.png"), spec["size"], spec["channels"], spec["crop"])
        reference = backend(model_input(grid[None], spec["mean"], spec["std"]))[0]
        np.testing.assert_allclose(np.array(printed[1:], dtype=np.float64), reference, rtol=1e-4, atol=1e-4)


def test_model_card_snippet_with_a_center_crop(int8_export: Path, tmp_path: Path) -> None:
    """A model whose metadata asks for the center crop: the snippet crops as dha predict does."""
    proto = onnx.load(str(int8_export / "model.onnx"))
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            meta = json.loads(entry.value)
            meta["input"]["crop"] = 0.75
            entry.value = json.dumps(meta)
    onnx.save(proto, str(tmp_path / "model.onnx"))
    image = np.random.default_rng(0).integers(0, 256, (23, 37), dtype=np.uint8)
    Image.fromarray(image, mode="L").save(tmp_path / "image.png")
    code = onnx_snippet(meta)
    assert "image.crop(" in code
    printed = run_snippet(code + "\nprint(*logits.tolist())\n", tmp_path)
    backend = OnnxBackend(tmp_path / "model.onnx", provider="cpu")
    from dha_pipeline.preprocess import prepare_image

    grid = prepare_image(image, 8, 1, 0.75)
    reference = backend(model_input(grid[None], meta["input"]["mean"], meta["input"]["std"]))[0]
    np.testing.assert_allclose(np.array(printed[1:], dtype=np.float64), reference, rtol=1e-4, atol=1e-4)


def test_model_card_contents(benchmarked: Path, metadata: dict) -> None:
    assert main(["evaluate", str(benchmarked / "model.int8.onnx"), "--data", "digits", "--latency-runs", "2"]) == 0
    assert main(["evaluate", str(benchmarked / "model.onnx"), "--data", "digits", "--latency-runs", "2"]) == 0
    card = (benchmarked / "MODEL_CARD.md").read_text()
    for heading in ("## At a glance", "## How to call it", "## Input", "## Network", "## How it was trained",
                    "## Accuracy per class", "## Latency", "## Export parity", "## Intended use and limits"):
        assert heading in card, heading
    assert "![the chosen network](network.png)" in card and (benchmarked / "network.png").is_file()
    assert "| class | fp32 (test) | int8 (test) |" in card
    assert sum(line.startswith("| ") and line.split("|")[1].strip() in metadata["classes"]
               for line in card.splitlines()) == 10
    assert "dha predict exports/tiny/model.onnx" in card
    assert "| `model.pt2` |" in card and "| `model.int8.onnx` |" in card
    assert "- Not tested:" in card and "accuracy on held-out test data" not in card  # it was evaluated
    assert "weight decay 0.0003" in card and "cosine to 0 over 2 epochs" in card
    assert re.search(r"\d+(\.\d)? %", card) and "e-0" not in card.split("## Export parity")[0]


def test_human_count() -> None:
    assert human_count(53082) == "53.1 k"
    assert human_count(2263296) == "2.26 M"
    assert human_count(495690) == "496 k"
    assert human_count(12) == "12"
