"""Imbalanced data: prepare warns about a skewed train split, and `train.class_weights = "balanced"` weights each
class's training loss by n / (classes x n_class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_npz
from torch.nn import functional as F

from dha_pipeline import stages
from dha_pipeline.data.cache import load_cache
from dha_pipeline.recipe import recipe_from_dict
from dha_pipeline.search.class_weights import balanced_class_weights
from dha_pipeline.search.loop import SearchRun

SKEWED = np.array([0] * 50 + [1] * 5 + [2] * 5)
"""A made train split: class 'a' has ten times the images of 'b' and of 'c'."""


def _recipe(tmp_path: Path, npz: Path, class_weights: str = "none"):  # type: ignore[no-untyped-def]
    return recipe_from_dict({"name": "skew", "runs_dir": str(tmp_path / "runs"), "device": "cpu",
                             "data": {"dataset": f"npz:{npz}", "image_size": 8, "val_fraction": 0.1},
                             "model": {"init_channels": 4, "layers": 3},
                             "train": {"epochs": 1, "batch_size": 16, "class_weights": class_weights},
                             "search": {"mode": "manual", "components": []}})


def test_balanced_weights_even_out_the_classes_and_average_one() -> None:
    weights = balanced_class_weights([90, 10, 0], torch.device("cpu"))
    assert weights.tolist() == pytest.approx([100 / (2 * 90), 100 / (2 * 10), 0.0])
    assert float((weights[:2] * torch.tensor([90.0, 10.0])).sum()) == pytest.approx(100.0)


def test_prepare_warns_on_a_skewed_split_and_training_weights_the_loss(tmp_path: Path) -> None:
    even = make_npz(tmp_path / "even.npz", n_train=60)
    assert not any("imbalanced" in warning for warning in stages.prepare(_recipe(tmp_path / "e", even)).warnings)
    skewed = make_npz(tmp_path / "skewed.npz", n_train=60, y_train=SKEWED)
    warnings = stages.prepare(_recipe(tmp_path / "s", skewed)).warnings
    (warning,) = [warning for warning in warnings if "imbalanced" in warning]
    assert "class 'a'" in warning and "train.class_weights" in warning

    recipe = _recipe(tmp_path / "s", skewed, "balanced")
    data = load_cache(recipe.layout.cache, ("train", "val"))
    counts = data.class_counts("train")
    assert counts[0] > 5 * min(counts[1:])
    run = SearchRun(recipe, data)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    expected = run.class_weight[labels] * F.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(run.per_sample_loss(logits, None, labels), expected)
    assert run.class_weight[1] > 5 * run.class_weight[0], "the rare classes weigh more"
    plain = SearchRun(_recipe(tmp_path / "s", skewed), data)
    assert plain.class_weight is None
    torch.testing.assert_close(plain.per_sample_loss(logits, None, labels),
                               F.cross_entropy(logits, labels, reduction="none"))
