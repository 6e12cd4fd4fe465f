"""Predict: top-k labels for image files from the tiny run's ONNX model, without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from cli.main import main
from dha_pipeline.errors import DhaError
from dha_pipeline.formats.onnx_runtime import OnnxBackend
from dha_pipeline.predict import Prediction, expand_inputs, predict, read_image, softmax
from dha_pipeline.preprocess import model_input, prepare_image

REPO_ROOT = Path(__file__).resolve().parent.parent
DIGIT_CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def model(tiny_run: Path) -> Path:
    return tiny_run / "exports" / "tiny" / "model.onnx"


def digit_pixels(count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """sklearn digits scaled to uint8 exactly as the digits dataset source does."""
    bunch = load_digits()
    return np.round(bunch.images[:count] * (255.0 / 16)).astype(np.uint8), bunch.target[:count]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """8x8 grayscale digits, 16x16 upscaled ones, an RGB copy, a JPEG, an RGBA and a palette image."""
    folder = tmp_path_factory.mktemp("images")
    pixels, _ = digit_pixels(4)
    paths: dict[str, Path] = {}
    for i, digit in enumerate(pixels):
        gray = Image.fromarray(digit, mode="L")
        paths[f"gray8_{i}"] = folder / f"gray8_{i}.png"
        gray.save(paths[f"gray8_{i}"])
        paths[f"gray16_{i}"] = folder / f"gray16_{i}.png"
        gray.resize((16, 16), Image.Resampling.NEAREST).save(paths[f"gray16_{i}"])
    first = Image.fromarray(pixels[0], mode="L")
    paths["rgb8"] = folder / "rgb8.png"
    first.convert("RGB").save(paths["rgb8"])
    paths["rgb16"] = folder / "rgb16.png"
    first.resize((16, 16), Image.Resampling.BILINEAR).convert("RGB").save(paths["rgb16"])
    paths["jpeg"] = folder / "digit.jpg"
    first.resize((16, 16), Image.Resampling.BILINEAR).convert("RGB").save(paths["jpeg"], quality=95)
    paths["rgba"] = folder / "rgba.png"
    first.convert("RGBA").save(paths["rgba"])
    paths["palette"] = folder / "palette.png"
    first.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(paths["palette"])
    return paths


def expected_probabilities(model: Path, raw: np.ndarray) -> np.ndarray:
    """What the model gives for one raw uint8 image, through the shared preprocessing."""
    backend = OnnxBackend(model, provider="cpu")
    spec = backend.metadata["input"]
    grid = prepare_image(raw, spec["size"], spec["channels"])[None]
    return softmax(backend(model_input(grid, spec["mean"], spec["std"])))[0]


def check_prediction(prediction: Prediction, k: int) -> None:
    labels = [label for label, _ in prediction.top]
    probabilities = [p for _, p in prediction.top]
    assert len(prediction.top) == k
    assert len(set(labels)) == k and set(labels) <= set(DIGIT_CLASSES)
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + 1e-6


# --------------------------------------------------------------------------- predict()


def test_predict_top_k_from_the_classes(model: Path, images: dict[str, Path]) -> None:
    paths = list(images.values())
    predictions = predict(model, paths, top_k=3).predictions
    assert [p.path for p in predictions] == [str(p) for p in paths]
    for prediction in predictions:
        check_prediction(prediction, 3)


def test_predict_matches_the_model_on_the_same_pixels(model: Path, images: dict[str, Path]) -> None:
    pixels, _ = digit_pixels(4)
    predictions = predict(model, [images[f"gray8_{i}"] for i in range(4)], top_k=10).predictions
    for prediction, raw in zip(predictions, pixels):
        expected = expected_probabilities(model, raw)
        got = dict(prediction.top)
        assert set(got) == set(DIGIT_CLASSES)
        np.testing.assert_allclose([got[c] for c in DIGIT_CLASSES], expected, atol=1e-6)
        assert prediction.top[0][0] == DIGIT_CLASSES[int(expected.argmax())]
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_gray_rgb_rgba_and_palette_agree(model: Path, images: dict[str, Path]) -> None:
    """An RGB, RGBA or palette copy of a gray image is turned back into the same gray grid."""
    names = ["gray8_0", "rgb8", "rgba", "palette"]
    predictions = predict(model, [images[n] for n in names], top_k=10).predictions
    reference = dict(predictions[0].top)
    for name, prediction in zip(names[1:], predictions[1:]):
        assert [label for label, _ in prediction.top] == [label for label, _ in predictions[0].top], name
        for label, p in prediction.top:
            assert p == pytest.approx(reference[label], abs=1e-6), name


def test_predict_resizes_larger_images(model: Path, images: dict[str, Path]) -> None:
    for name in ("gray16_1", "rgb16", "jpeg"):
        with Image.open(images[name]) as image:
            raw = np.asarray(image)
        (prediction,) = predict(model, [images[name]], top_k=10).predictions
        expected = expected_probabilities(model, raw)
        got = dict(prediction.top)
        np.testing.assert_allclose([got[c] for c in DIGIT_CLASSES], expected, atol=1e-6)


def test_predict_top_k_is_capped_by_the_class_count(model: Path, images: dict[str, Path]) -> None:
    (prediction,) = predict(model, [images["gray8_0"]], top_k=50).predictions
    check_prediction(prediction, 10)
    assert sum(p for _, p in prediction.top) == pytest.approx(1.0, abs=1e-5)
    (single,) = predict(model, [images["gray8_0"]], top_k=1).predictions
    assert single.top == prediction.top[:1]


def test_softmax_rows_sum_to_one_and_are_stable() -> None:
    logits = np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]])
    probabilities = softmax(logits)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(probabilities[0], [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(probabilities[1], [0.2, 0.6, 0.2])


# --------------------------------------------------------------------------- bad inputs


def test_an_unreadable_image_is_reported_and_the_others_are_predicted(model: Path, tmp_path: Path,
                                                                      images: dict[str, Path]) -> None:
    text = tmp_path / "notes.png"
    text.write_text("definitely not a PNG\n")
    result = predict(model, [images["gray8_0"], text, tmp_path / "missing.png", images["rgb16"]])
    assert [p.path for p in result.predictions] == [str(images["gray8_0"]), str(images["rgb16"])]
    assert [path for path, _ in result.unreadable] == [str(text), str(tmp_path / "missing.png")]
    assert "not a readable image" in result.unreadable[0][1] and "does not exist" in result.unreadable[1][1]
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(images["gray16_0"].read_bytes()[:40])
    with pytest.raises(DhaError, match="not a readable image"):
        read_image(truncated)


def test_folders_and_globs_expand_to_their_images_once_and_sorted(model: Path, images: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    folder = images["gray8_0"].parent
    expected = sorted([*folder.glob("*.png"), images["jpeg"]])
    assert expand_inputs([folder]) == expected
    assert expand_inputs([str(folder / "gray8_*.png")]) == [images[f"gray8_{i}"] for i in range(4)]
    both = [images["rgb8"], images["rgb16"], images["rgba"]]
    assert expand_inputs([images["rgb8"], str(folder / "rgb?*.png")]) == both, "each path once, in the order given"
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    shutil.copy(images["jpeg"], nested / "deep.jpg")
    (tmp_path / "a" / "readme.txt").write_text("not an image\n")
    assert expand_inputs([tmp_path / "a"]) == [nested / "deep.jpg"]
    assert expand_inputs([str(tmp_path / "**" / "*.jpg")]) == [nested / "deep.jpg"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DhaError, match="holds no images"):
        expand_inputs([tmp_path / "empty"])
    with pytest.raises(DhaError, match="matches no files"):
        expand_inputs([str(tmp_path / "*.gif")])
    assert [p.path for p in predict(model, [folder], top_k=1).predictions] == [str(p) for p in expected]


def test_batches_give_the_probabilities_of_one_big_batch(model: Path, images: dict[str, Path]) -> None:
    paths = list(images.values())
    whole = predict(model, paths, top_k=10, batch_size=64).predictions
    small = predict(model, paths, top_k=10, batch_size=3).predictions
    for a, b in zip(whole, small, strict=True):
        assert a.path == b.path and [label for label, _ in a.top] == [label for label, _ in b.top]
        np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-6)


def test_cli_non_image_file_exits_2(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    assert main(["predict", str(model), str(text)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "notes.txt" in lines[0] and "not a readable image" in lines[0]


def test_non_onnx_model_path_is_an_error(tiny_run: Path, tmp_path: Path, images: dict[str, Path]) -> None:
    with pytest.raises(DhaError, match="needs an ONNX model"):
        predict(tiny_run / "exports" / "tiny" / "model.ts", [images["gray8_0"]])
    fake = tmp_path / "model.onnx"
    fake.write_text("not onnx\n")
    with pytest.raises(DhaError, match="not a valid ONNX model"):
        predict(fake, [images["gray8_0"]])
    with pytest.raises(DhaError, match="does not exist"):
        predict(tmp_path / "absent.onnx", [images["gray8_0"]])


def test_cli_non_onnx_model_exits_2(tiny_run: Path, tmp_path: Path, images: dict[str, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    ts_copy = tmp_path / "model.ts"
    shutil.copy2(tiny_run / "exports" / "tiny" / "model.ts", ts_copy)
    assert main(["predict", str(ts_copy), str(images["gray8_0"])]) == 2
    fake = tmp_path / "model.onnx"
    fake.write_text("not onnx\n")
    assert main(["predict", str(fake), str(images["gray8_0"])]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2
    assert "needs an ONNX model" in lines[0] and "not a valid ONNX model" in lines[1]


def test_cli_predict_prints_a_table(model: Path, images: dict[str, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(model), str(images["gray8_0"]), str(images["rgb16"]), "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "dha predict" in out and "#2" in out and "#3" not in out
    assert out.count("%") == 2 * 2  # two images, two "label probability%" cells each



def test_cli_predict_table_keeps_long_paths_whole_off_a_terminal(model: Path, images: dict[str, Path], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "gray8_0.png"
    deep.parent.mkdir()
    shutil.copy(images["gray8_0"], deep)
    assert main(["predict", str(model), str(deep)]) == 0
    out = capsys.readouterr().out
    assert str(deep) in out and "…" not in out


def test_cli_predict_top_k_zero_is_a_usage_error(model: Path, images: dict[str, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(model), str(images["gray8_0"]), "--top-k", "0"]) == 2
    assert "top-k" in capsys.readouterr().err


def test_cli_predict_json_is_one_object_per_image_and_line(model: Path, images: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    code = main(["predict", str(model), str(images["gray8_0"]), str(bad), str(images["jpeg"]), "--json",
                 "--top-k", "2"])
    assert code == 1, "an unreadable image is reported and sets exit code 1"
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [row["path"] for row in rows] == [str(images["gray8_0"]), str(images["jpeg"]), str(bad)]
    for row in rows[:2]:
        assert [sorted(entry) for entry in row["top"]] == [["label", "probability"]] * 2
        assert row["top"][0]["probability"] >= row["top"][1]["probability"]
    assert "not a readable image" in rows[2]["error"]
    assert "skipped:" in captured.err and "bad.jpg" in captured.err


def test_cli_predict_reads_a_folder_and_names_the_unreadable(model: Path, images: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("gray8_0", "rgb16"):
        shutil.copy(images[name], folder / images[name].name)
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    assert main(["predict", str(model), str(folder)]) == 1
    captured = capsys.readouterr()
    assert "gray8_0.png" in captured.out and "rgb16.png" in captured.out
    assert "broken.png" not in captured.out and "broken.png" in captured.err


# --------------------------------------------------------------------------- no torch needed


def test_predict_imports_neither_torch_nor_torchvision(model: Path, images: dict[str, Path]) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules['torch'] = None
        sys.modules['torchvision'] = None
        from cli.main import main
        raise SystemExit(main(['predict', {str(model)!r}, {str(images['gray8_0'])!r}, {str(images['rgb16'])!r}]))
    """)
    env = {**os.environ, "COLUMNS": "400"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "gray8_0.png" in result.stdout and "rgb16.png" in result.stdout
    assert result.stdout.count("%") == 2 * 3  # two images, default --top-k 3
