"""Evaluate (reports, backends agreement, user errors) and the inference backends, on the shared tiny run.

`tiny_run` is read-only: evaluations that write reports run on copies under tmp_path.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from cli.main import main
from cli.summaries import evaluation_rows
from conftest import make_imagefolder, make_npz
from dha_pipeline.data import cache
from dha_pipeline.data.batches import ArraySource
from dha_pipeline.data.cache import load_cache
from dha_pipeline.errors import DhaError
from dha_pipeline.evaluate import (LATENCY_BATCH, LATENCY_WARMUP, data_config_for, evaluate_file, evaluate_model,
                                   measure_latency)
from dha_pipeline.formats.onnx_runtime import OnnxBackend
from dha_pipeline.formats.registry import FORMATS, load_backend
from dha_pipeline.formats.torch_eager import TorchBackend
from dha_pipeline.formats.torchscript import TorchScriptBackend
from dha_pipeline.metrics import class_balanced_scores
from dha_pipeline.preprocess import model_input
from dha_pipeline.recipe import DataConfig

REPORT_KEYS = {"top1", "top5", "balanced_accuracy", "macro_f1",
               "num_samples", "dataset", "split", "backend", "per_class_top1", "latency_ms",
               "throughput_ips"}
DIGIT_CLASSES = [str(i) for i in range(10)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def stage_report(export_dir: Path) -> dict:
    return json.loads((export_dir / "evaluation.json").read_text())


@pytest.fixture
def models(tmp_path: Path, export_dir: Path, run_dir: Path) -> dict[str, Path]:
    """Private copies of the three model files: .onnx, .ts and the derived child .pt."""
    exports = tmp_path / "exports" / "tiny"
    exports.mkdir(parents=True)
    shutil.copy2(export_dir / "model.onnx", exports / "model.onnx")
    shutil.copy2(export_dir / "model.ts", exports / "model.ts")
    derived = tmp_path / "runs" / "tiny" / "derived"
    derived.mkdir(parents=True)
    shutil.copy2(run_dir / "derived" / "child.pt", derived / "child.pt")
    return {"onnx": exports / "model.onnx", "ts": exports / "model.ts", "pt": derived / "child.pt"}


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The `error:` lines on stderr (progress bars may share stderr)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def check_report(report: dict, classes: list[str]) -> None:
    assert REPORT_KEYS <= set(report)
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0
    assert 0.0 <= report["balanced_accuracy"] <= 1.0 and 0.0 <= report["macro_f1"] <= 1.0
    n = report["num_samples"]
    assert isinstance(n, int) and n > 0
    assert set(report["per_class_top1"]) == set(classes)
    assert all(v is None or 0.0 <= v <= 1.0 for v in report["per_class_top1"].values())
    assert set(report["latency_ms"]) >= {"batch1_p50", "batch1_p90", "batch32_p50"}
    latency = report["latency_ms"]
    assert all(v >= 0 for v in latency.values())
    assert latency["batch1_p90"] >= latency["batch1_p50"] - 1e-9
    assert report["throughput_ips"] == pytest.approx(LATENCY_BATCH / (report["latency_ms"]["batch32_p50"] / 1000))
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (len(classes), len(classes))
    assert matrix.sum() == n
    assert np.trace(matrix) / n == pytest.approx(report["top1"])
    for i, name in enumerate(classes):
        if matrix[i].sum():
            assert report["per_class_top1"][name] == pytest.approx(matrix[i, i] / matrix[i].sum())


# --------------------------------------------------------------------------- the stage's evaluation.json


def test_stage_evaluation_report(stage_report: dict, export_dir: Path) -> None:
    check_report(stage_report, DIGIT_CLASSES)
    assert stage_report["dataset"] == "digits"
    assert stage_report["split"] == "test"
    assert stage_report["backend"] == "onnxruntime"
    assert stage_report["num_samples"] == 360  # 20% of sklearn's 1,797 digits, stratified
    assert Path(stage_report["model"]) == export_dir / "model.onnx"


def test_stage_confusion_png_is_a_png(export_dir: Path) -> None:
    assert is_png(export_dir / "evaluation.confusion.png")
    with Image.open(export_dir / "evaluation.confusion.png") as image:
        assert image.format == "PNG" and image.size[0] > 50 and image.size[1] > 50


# --------------------------------------------------------------------------- evaluate_model on the three backends


def test_backends_agree_on_the_same_data(models: dict[str, Path], stage_report: dict) -> None:
    results = {kind: evaluate_file(path, split="test", batch_size=128, latency_runs=1)
               for kind, path in models.items()}
    backends = {kind: result.report["backend"] for kind, result in results.items()}
    assert backends == {"onnx": "onnxruntime", "ts": "torchscript", "pt": "torch"}
    for result in results.values():
        check_report(result.report, DIGIT_CLASSES)
        assert result.report["dataset"] == "digits" and result.report["split"] == "test"
        assert result.report["num_samples"] == stage_report["num_samples"]
        assert result.report["top1"] == stage_report["top1"]
        assert result.report["top5"] == stage_report["top5"]
        assert result.report["confusion_matrix"] == stage_report["confusion_matrix"]
        assert result.report["per_class_top1"] == stage_report["per_class_top1"]
        assert is_png(result.confusion_png)
        assert json.loads(result.json_path.read_text()) == result.report
    # default report names sit beside each model
    assert results["onnx"].json_path == models["onnx"].parent / "evaluation.json"
    assert results["onnx"].confusion_png == models["onnx"].parent / "evaluation.confusion.png"
    assert results["ts"].json_path == models["ts"].parent / "evaluation.model.ts.json"
    assert results["pt"].json_path == models["pt"].parent / "evaluation.child.pt.json"
    # the ONNX model's card is refreshed with the evaluation
    card = models["onnx"].parent / "MODEL_CARD.md"
    assert card.is_file() and card.read_text().strip()


def test_evaluate_out_path_and_other_split(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "reports" / "val.json"
    result = evaluate_file(models["onnx"], split="val", latency_runs=1, out=out)
    assert result.json_path == out and out.is_file()
    assert result.confusion_png == tmp_path / "reports" / "val.confusion.png"
    assert is_png(result.confusion_png)
    report = json.loads(out.read_text())
    check_report(report, DIGIT_CLASSES)
    assert report["split"] == "val"
    assert report["num_samples"] == 144  # 10% of the 1,437 non-test digits
    # with --out, nothing is written beside the model
    assert sorted(p.name for p in models["onnx"].parent.iterdir()) == ["model.onnx", "model.ts"]


def test_cli_evaluate_writes_report(models: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.json"
    code = main(["evaluate", str(models["onnx"]), "--data", "digits", "--split", "test", "--batch-size", "100",
                 "--latency-runs", "2", "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    check_report(report, DIGIT_CLASSES)
    assert report["backend"] == "onnxruntime" and report["num_samples"] == 360
    assert is_png(tmp_path / "cli.confusion.png")
    assert "top-1" in capsys.readouterr().out


def test_evaluate_on_an_npz_with_the_models_classes(models: dict[str, Path], tmp_path: Path) -> None:
    npz = make_npz(tmp_path / "ten.npz", n_train=100, n_test=30, size=8, classes=tuple(DIGIT_CLASSES))
    result = evaluate_file(models["onnx"], dataset=f"npz:{npz}", latency_runs=1, out=tmp_path / "npz.json")
    check_report(result.report, DIGIT_CLASSES)
    assert result.report["dataset"] == f"npz:{npz}"
    assert result.report["num_samples"] == 30
    assert result.report["class_names_match"] is True


def test_evaluate_warns_when_class_names_differ(models: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    names = tuple(f"c{i}" for i in range(10))
    npz = make_npz(tmp_path / "renamed.npz", n_train=100, n_test=30, size=8, classes=names)
    result = evaluate_file(models["onnx"], dataset=f"npz:{npz}", latency_runs=1, out=tmp_path / "r.json")
    assert result.report["class_names_match"] is False
    assert [warning for warning in result.warnings if "class names differ" in warning]
    assert main(["evaluate", str(models["onnx"]), "--data", f"npz:{npz}", "--latency-runs", "1",
                 "--out", str(tmp_path / "cli.json")]) == 0
    assert "warning: the data's class names differ from the model's" in capsys.readouterr().err


def _grey_digits_folder(root: Path) -> Path:
    """An ImageFolder of 10 classes (8x8 grayscale), so the tiny digits model can score it."""
    return make_imagefolder(root, classes=tuple(DIGIT_CLASSES), per_class=10, size=(8, 8))


def test_evaluate_decodes_only_the_split_it_scores(models: dict[str, Path], tmp_path: Path) -> None:
    root = _grey_digits_folder(tmp_path / "folder")
    (root / "train" / "3" / "broken.png").write_bytes(b"not an image")  # never decoded for the test split
    result = evaluate_file(models["onnx"], dataset=f"imagefolder:{root}", split="test", latency_runs=1,
                           out=tmp_path / "folder.json")
    assert result.report["num_samples"] == 100 and result.report["split"] == "test"


def test_a_split_carved_from_train_decodes_only_its_own_images(models: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = _grey_digits_folder(tmp_path / "folder")
    decoded: list[int] = []
    real = cache.decode_files

    def counting(paths, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(len(paths))
        return real(paths, **kwargs)

    monkeypatch.setattr(cache, "decode_files", counting)
    result = evaluate_file(models["onnx"], dataset=f"imagefolder:{root}", split="val", latency_runs=1,
                           out=tmp_path / "val.json")
    assert decoded == [result.report["num_samples"]] == [10], "only val's 10 images, not train's 100, are decoded"


# --------------------------------------------------------------------------- user errors: exit 2, one line


def test_cli_class_count_mismatch(models: dict[str, Path], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    npz = make_npz(tmp_path / "abc.npz")  # 3 classes, 10x10 grayscale
    code = main(["evaluate", str(models["onnx"]), "--data", f"npz:{npz}", "--latency-runs", "1"])
    assert code == 2
    lines = error_lines(capsys)
    assert len(lines) == 1
    assert "3 classes" in lines[0] and "predicts 10" in lines[0]
    assert not (models["onnx"].parent / "evaluation.json").exists()


def test_class_count_mismatch_raises_dha_error(models: dict[str, Path], tmp_path: Path) -> None:
    npz = make_npz(tmp_path / "abcd.npz", classes=("a", "b", "c", "d"))
    with pytest.raises(DhaError, match=r"4 classes.*predicts 10"):
        evaluate_file(models["ts"], dataset=f"npz:{npz}", latency_runs=1)


@pytest.mark.parametrize("name, expected", [
    ("model.onnx", "not a valid ONNX model"),
    ("model.ts", "not a valid TorchScript model"),
    ("child.pt", "cannot be read"),
])
def test_cli_model_file_that_is_not_a_model(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                            expected: str) -> None:
    model = tmp_path / name
    model.write_text("this is not a model\n")
    assert main(["evaluate", str(model), "--latency-runs", "1"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and expected in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_cli_unknown_model_suffix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(b"\x00\x01")
    assert main(["evaluate", str(model)]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "unknown type" in lines[0] and ".h5" in lines[0]


def test_cli_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(tmp_path / "nowhere" / "model.onnx")]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "does not exist" in lines[0]


def test_cli_onnx_model_without_metadata(tmp_path: Path, export_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    proto = onnx.load(str(export_dir / "model.onnx"))
    del proto.metadata_props[:]
    model = tmp_path / "model.onnx"
    onnx.save(proto, str(model))
    assert main(["evaluate", str(model), "--latency-runs", "1"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "carries no dha metadata" in lines[0]


def test_cli_bad_split(models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(models["onnx"]), "--split", "holdout"]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "holdout" in lines[0]


def test_cli_training_checkpoint_instead_of_child(tmp_path: Path, run_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "last.pt"
    shutil.copy2(run_dir / "checkpoints" / "last.pt", model)
    assert main(["evaluate", str(model), "--latency-runs", "1", "--out", str(tmp_path / "r.json")]) == 2
    assert len(error_lines(capsys)) == 1


def test_cli_onnx_model_with_corrupt_metadata(tmp_path: Path, export_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    proto = onnx.load(str(export_dir / "model.onnx"))
    proto.metadata_props[0].value = "{not json"
    model = tmp_path / "model.onnx"
    onnx.save(proto, str(model))
    assert main(["evaluate", str(model), "--latency-runs", "1"]) == 2
    assert len(error_lines(capsys)) == 1


# --------------------------------------------------------------------------- backends


def test_load_backend_by_suffix(models: dict[str, Path], tmp_path: Path) -> None:
    assert isinstance(load_backend(models["onnx"]), OnnxBackend)
    assert isinstance(load_backend(models["ts"]), TorchScriptBackend)
    assert isinstance(load_backend(models["pt"]), TorchBackend)
    upper = tmp_path / "MODEL.ONNX"
    shutil.copy2(models["onnx"], upper)
    assert isinstance(load_backend(upper), OnnxBackend)
    assert {record.suffix for record in FORMATS.values()} == {".onnx", ".ts", ".pt2", ".pt"}  # errors: test_formats


def test_backends_compute_the_same_logits(models: dict[str, Path], run_dir: Path) -> None:
    backends = {kind: load_backend(path) for kind, path in models.items()}
    meta = backends["onnx"].metadata
    images = load_cache(run_dir / "cache").sources["test"].images[:7]
    batch = model_input(images, meta["input"]["mean"], meta["input"]["std"])
    logits = {kind: backend(batch) for kind, backend in backends.items()}
    for kind, out in logits.items():
        assert out.shape == (7, 10), kind
        assert out.dtype == np.float32, kind
    np.testing.assert_allclose(logits["ts"], logits["pt"], atol=1e-5)
    np.testing.assert_allclose(logits["onnx"], logits["pt"], atol=1e-4)
    np.testing.assert_allclose(backends["onnx"](batch[:1]), logits["onnx"][:1], atol=1e-5)


def test_backend_metadata(models: dict[str, Path], export_dir: Path) -> None:
    exported = json.loads((export_dir / "metadata.json").read_text())
    onnx_meta = OnnxBackend(models["onnx"], provider="cpu")
    assert onnx_meta.provider == "CPUExecutionProvider"
    assert {k: v for k, v in onnx_meta.metadata.items() if k != "onnx_exporter"} == exported
    assert TorchScriptBackend(models["ts"]).metadata == exported
    torch_meta = TorchBackend(models["pt"]).metadata
    assert torch_meta["name"] == "tiny"  # runs/<name>/derived/child.pt
    for key in ("classes", "input", "genotype", "mode", "search_space", "hyperparameters", "recipe_sha256"):
        assert torch_meta[key] == exported[key], key
    assert exported["data"] == {**torch_meta["data"], "images": {"train": 1293, "val": 144, "test": 360}}
    # each record's metadata reader reads what its loader carries; the child's name is its own, not its path's
    for kind, fmt in (("onnx", "onnx"), ("ts", "torchscript"), ("pt", "torch")):
        assert FORMATS[fmt].read_metadata(models[kind]) == load_backend(models[kind]).metadata, fmt
    elsewhere = models["pt"].parent.parent.parent / "other.pt"
    shutil.copy2(models["pt"], elsewhere)
    assert FORMATS["torch"].read_metadata(elsewhere)["name"] == "tiny"


# --------------------------------------------------------------------------- helpers of evaluate


class CountingBackend:
    name = "counting"
    metadata: dict = {}

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(batch))
        return np.zeros((len(batch), 3), np.float32)


def test_measure_latency_runs_batch_1_and_batch_32() -> None:
    backend = CountingBackend()
    sample = np.zeros((5, 1, 8, 8), np.float32)
    latency = measure_latency(backend, sample, runs=4)
    assert set(latency) == {"batch1_p50", "batch1_p90", "batch32_p50"}
    assert all(v >= 0 for v in latency.values())
    per_size = LATENCY_WARMUP + 4
    assert backend.batch_sizes == [1] * per_size + [LATENCY_BATCH] * per_size


def test_measure_latency_single_run() -> None:
    latency = measure_latency(CountingBackend(), np.zeros((40, 1, 8, 8), np.float32), runs=1)
    assert latency["batch1_p90"] == latency["batch1_p50"]


def test_data_config_for_reproduces_the_models_splits() -> None:
    meta = {"input": {"size": 12, "channels": 3},
            "data": {"dataset": "digits", "split": {"val_fraction": 0.2, "test_fraction": 0.3, "split_seed": 7}}}
    config = data_config_for(meta, None)
    assert (config.dataset, config.image_size, config.channels) == ("digits", 12, "3")
    assert (config.val_fraction, config.test_fraction, config.split_seed) == (0.2, 0.3, 7)
    assert config.download is False
    other = data_config_for(meta, "npz:/data/x.npz", download=True)
    assert other.dataset == "npz:/data/x.npz" and other.download is True
    bare = data_config_for({"input": {"size": 8, "channels": 1}, "data": {"dataset": "digits"}}, None)
    assert (bare.val_fraction, bare.test_fraction, bare.split_seed) == (
        DataConfig.val_fraction, DataConfig.test_fraction, DataConfig.split_seed)


def test_balanced_accuracy_and_macro_f1_show_what_top1_hides() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    always_zero = np.zeros(100, dtype=np.int64)
    scores = class_balanced_scores(labels, always_zero)
    assert scores["balanced_accuracy"] == pytest.approx(0.5)  # top-1 is 0.9
    assert scores["macro_f1"] == pytest.approx((2 * 0.9 / 1.9 + 0.0) / 2)
    # class 2 is predicted but absent from the data: it lowers class 0's recall and is not a class of its own
    scores = class_balanced_scores(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]))
    assert scores == {"balanced_accuracy": pytest.approx(0.75), "macro_f1": pytest.approx((2 / 3 + 1) / 2)}


class FixedLogits:
    """A backend of three classes: one-hot logits of fixed predictions for the scored batch, zeros when timed."""

    name, provider = "fake", "cpu"

    def __init__(self, predictions: np.ndarray) -> None:
        self.predictions = predictions
        self.metadata = {"name": "fake", "classes": ["a", "b", "c"],
                         "input": {"mean": [0.0], "std": [1.0], "size": 4, "channels": 1}}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != len(self.predictions):  # the latency calls
            return np.zeros((len(batch), 3), dtype=np.float32)
        return np.eye(3, dtype=np.float32)[self.predictions]


def test_top5_is_left_out_with_five_classes_or_fewer(tmp_path: Path) -> None:
    labels = np.array([0, 0, 1, 2])
    source = ArraySource(np.zeros((4, 4, 4, 1), dtype=np.uint8), labels)
    report = evaluate_model(tmp_path / "model.onnx", source, dataset="made", split="test", classes=["a", "b", "c"],
                            backend=FixedLogits(np.array([0, 1, 1, 2])), latency_runs=1,
                            out=tmp_path / "evaluation.json").report
    assert "top5" not in report and report["top1"] == pytest.approx(0.75)
    assert report["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    rows = evaluation_rows(report, "x")
    assert "top-5" not in rows and "balanced accuracy / macro-F1" in rows


def test_a_held_out_folder_with_some_of_the_models_classes(models: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A test-only folder of two of the ten digit classes: labels match by name, the absent classes are None."""
    root = make_imagefolder(tmp_path / "held", classes=("3", "7"), per_class=5, splits=("test",), size=(8, 8))
    result = evaluate_file(models["onnx"], dataset=f"imagefolder:{root}", latency_runs=1)
    report = result.report
    assert result.json_path.parent == models["onnx"].parent and result.json_path.name.startswith("evaluation.")
    assert result.json_path.name.endswith("_held.test.json"), "other data never replaces the run's evaluation.json"
    assert not (models["onnx"].parent / "evaluation.json").exists()
    assert report["num_samples"] == 10
    assert [name for name, value in report["per_class_top1"].items() if value is not None] == ["3", "7"]
    matrix = np.array(report["confusion_matrix"])
    assert matrix[3].sum() == matrix[7].sum() == 5 and matrix.sum() == 10, "rows are the model's classes 3 and 7"
    (root / "test" / "x").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "test" / "x" / "0.png")
    assert main(["evaluate", str(models["onnx"]), "--data", f"imagefolder:{root}", "--latency-runs", "1",
                 "--out", str(tmp_path / "x.json")]) == 2
    (line,) = error_lines(capsys)
    assert "not among them: x" in line and not (tmp_path / "x.json").exists()
