"""The MobileNet space through the whole pipeline: a joint DHA run under a latency budget, the latency
profile command, and the smoke run of the ImageNet recipe at full size."""

from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
from conftest import make_imagefolder, write_recipe

from cli.main import main

ROOT = Path(__file__).resolve().parent.parent

MOBILE_RECIPE = """
name = "mobile"
seed = 0
device = "cpu"

[data]
dataset = "digits"
image_size = 8
channels = "1"

[model]
space = "mobilenet"
width_mult = 0.25
stage_channels = [16, 24]
stage_depths = [2, 1]
stage_strides = [1, 2]
head_channels = 32
stem = "small"

[train]
epochs = 2
batch_size = 128
lr = 0.05

[augment]
crop_padding = 1
hflip = false
fraction_every = 2

[search]
mode = "joint"
components = ["nas", "da", "hpo"]
search_epochs = 1
max_latency_ms = 1000.0
latency_runs = 3

[export]
parity_samples = 64

[evaluate]
latency_runs = 2
"""


def test_joint_run_in_the_mobilenet_space_under_a_latency_budget(tmp_path: Path) -> None:
    assert main(["run", str(write_recipe(tmp_path, MOBILE_RECIPE))]) == 0
    run = tmp_path / "runs" / "mobile"
    summary = json.loads((run / "search" / "summary.json").read_text())
    assert summary["space"] == "mobilenet" and len(summary["genotype"]["layers"]) == 3
    assert 0 < summary["predicted_latency_ms"] <= 1000.0
    table = json.loads((tmp_path / "runs" / "latency_table.json").read_text())
    # call overhead, stem, 6 choices x 2 layer shapes (layers 0 and 1 share theirs), head
    assert len(table["entries"]) == 1 + 1 + 2 * 6 + 1
    exports = tmp_path / "exports" / "mobile"
    graph = onnx.load(str(exports / "model.onnx")).graph
    assert "BatchNormalization" not in {node.op_type for node in graph.node}  # folded into the convolutions
    metadata = json.loads((exports / "metadata.json").read_text())
    assert metadata["search_space"] == "mobilenet"
    assert metadata["genotype"] == summary["genotype"]
    assert (run / "plots" / "architecture.png").is_file()


def test_profile_latency_measures_once(tmp_path: Path, capsys) -> None:  # noqa: ANN001 - pytest fixture
    recipe = write_recipe(tmp_path, MOBILE_RECIPE)
    assert main(["profile-latency", str(recipe)]) == 0
    table = tmp_path / "runs" / "latency_table.json"
    entries = json.loads(table.read_text())["entries"]
    capsys.readouterr()
    assert main(["profile-latency", str(recipe)]) == 0
    assert json.loads(table.read_text())["entries"] == entries
    assert "skipped" in capsys.readouterr().out


def test_smoke_run_of_the_imagenet_recipe(tmp_path: Path, capsys) -> None:  # noqa: ANN001 - pytest fixture
    recipe = ROOT / "recipes" / "imagenet_mobilenet.toml"
    runs, exports = tmp_path / "runs", tmp_path / "exports"
    assert main(["run", str(recipe), "--smoke", "--set", f"runs_dir={json.dumps(str(runs))}",
                 "--set", f"exports_dir={json.dumps(str(exports))}"]) == 0
    out = capsys.readouterr().out
    assert "passed" in out and "predicted latency" in out
    child = exports / "imagenet_mobilenet_smoke"
    metadata = json.loads((child / "metadata.json").read_text())
    assert metadata["input"]["size"] == 224 and len(metadata["classes"]) == 1000
    assert len(metadata["genotype"]["layers"]) == 21
    assert metadata["parity"]["max_abs_diff"] <= 1e-3
    assert not (runs / "imagenet_mobilenet").exists()  # the real run's folder is left alone


def header_cpu_command(recipe: Path) -> list[str]:
    """The `--set` lines of the CPU command in a recipe's header comment: the first `dha run` line after "On a
    CPU", with its continuation lines."""
    lines = [line.lstrip("# ").rstrip() for line in recipe.read_text().splitlines() if line.startswith("#")]
    cpu = next(i for i, line in enumerate(lines) if "On a CPU" in line)
    start = next(i for i, line in enumerate(lines) if i > cpu and line.startswith("dha run"))
    command = lines[start]
    while command.endswith("\\"):
        start += 1
        command = command[:-1] + " " + lines[start]
    return re.findall(r"--set (\S+)", command)


def test_imagenet_recipe_runs_on_a_small_imagenet_folder_with_only_the_documented_keys(tmp_path: Path) -> None:
    """The CPU command of the ImageNet recipe's header, as written there, on a small ImageNet-format folder."""
    root = make_imagefolder(tmp_path / "tiny_imagenet", classes=("n01440764", "n01443537", "n01484850"),
                            per_class=50, splits=("train", "val"))
    runs, exports = tmp_path / "runs", tmp_path / "exports"
    documented = header_cpu_command(ROOT / "recipes" / "imagenet_mobilenet.toml")
    assert documented[0] == "data.dataset=imagenet:/data/tiny" and len(documented) == 7
    documented[0] = "data.dataset=imagenet:" + str(root)
    where = [f"runs_dir={json.dumps(str(runs))}", f"exports_dir={json.dumps(str(exports))}"]
    args = ["run", str(ROOT / "recipes" / "imagenet_mobilenet.toml")]
    for line in documented + where:
        args += ["--set", line]
    assert main(args) == 0
    evaluation = json.loads((exports / "imagenet_mobilenet" / "evaluation.json").read_text())
    assert evaluation["num_samples"] == 3 * 50 and evaluation["backend"] == "onnxruntime"
