"""A third search space, added the way docs/ARCHITECTURE.md says: its own package (tests/toyspace: settings,
space) and one line in the registry. Nothing else changes, and every stage runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_recipe

from cli.main import main
from dha_pipeline.errors import DhaError
from dha_pipeline.recipe import recipe_from_dict
from dha_pipeline.spaces.registry import SPACES
from dha_pipeline.stages import resolve_recipe

TOY_RECIPE = """
name = "toy"
seed = 0
device = "cpu"

[data]
dataset = "digits"
image_size = 8
channels = "1"

[model]
space = "toy"
width = 6

[train]
epochs = 2
batch_size = 64

[augment]
crop_padding = 1
hflip = false

[search]
mode = "joint"
components = ["nas", "da", "hpo"]
search_epochs = 1

[export]
formats = ["onnx"]
parity_samples = 64

[evaluate]
latency_runs = 2
"""


def test_a_third_space_is_its_package_and_one_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SPACES, "toy", "toyspace")  # the one registry line
    with pytest.raises(DhaError, match="unknown recipe key 'model.init_channels'; valid keys: .*model.width"):
        recipe_from_dict({"model": {"space": "toy", "init_channels": 4}})
    recipe = write_recipe(tmp_path, TOY_RECIPE)
    assert main(["run", str(recipe)]) == 0
    layout = resolve_recipe(recipe).layout
    summary = json.loads(layout.summary.read_text())
    assert summary["space"] == "toy" and summary["genotype"]["kernel"] in (1, 3, 5)
    assert [row["phase"] for row in csv_rows(layout.history)] == ["search", "train"]
    metadata = json.loads(layout.exports.metadata.read_text())
    kernel = summary["genotype"]["kernel"]
    assert metadata["search_space"] == "toy" and metadata["network"] == {"searched kernel": f"{kernel}x{kernel}"}
    assert f"searched kernel: {kernel}x{kernel}" in layout.exports.model_card.read_text()
    assert metadata["parity"]["max_abs_diff"] <= 1e-3, "the folded child exports exactly"
    assert json.loads(layout.exports.evaluation.read_text())["num_samples"] == 360


def csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
