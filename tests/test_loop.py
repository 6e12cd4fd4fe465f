"""The training loop: schedule, reproducibility, resume, NaN handling, outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from dha_pipeline.data.cache import build_dataset
from dha_pipeline.errors import DhaError
from dha_pipeline.recipe import Recipe, TrainConfig, recipe_from_dict
from dha_pipeline.search import loop
from dha_pipeline.search.checkpoint import load_checkpoint


def _recipe(tmp_path: Path, **train: object) -> Recipe:
    return recipe_from_dict({"name": "loop", "runs_dir": str(tmp_path / "runs"), "device": "cpu",
                             "data": {"image_size": 8, "channels": "1"},
                             "model": {"init_channels": 4, "layers": 3, "auxiliary": True, "drop_path": 0.1},
                             "train": {"epochs": 2, "batch_size": 128, **train},
                             "augment": {"crop_padding": 1, "hflip": False, "cutout": 2},
                             "search": {"mode": "manual", "components": []}})


@pytest.fixture(scope="module")
def digits8():  # type: ignore[no-untyped-def]
    recipe = recipe_from_dict({"data": {"image_size": 8, "channels": "1"}})
    return build_dataset(recipe.data)


def test_learning_rate_warmup_then_cosine() -> None:
    config = TrainConfig(epochs=10, lr=0.1, lr_min=0.001, warmup_epochs=2)
    assert loop.learning_rate(config, 0, 10) == pytest.approx(0.1 / 20)
    assert loop.learning_rate(config, 19, 10) == pytest.approx(0.1)
    assert loop.learning_rate(config, 20, 10) == pytest.approx(0.1)
    middle = loop.learning_rate(config, 60, 10)
    assert middle == pytest.approx(0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * 0.5)))
    assert loop.learning_rate(config, 100, 10) == pytest.approx(0.001)
    values = [loop.learning_rate(config, step, 10) for step in range(20, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_training_writes_history_checkpoint_and_is_reproducible(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    first = loop.train_manual(_recipe(tmp_path / "a"), digits8)
    second = loop.train_manual(_recipe(tmp_path / "b"), digits8)
    assert len(first.history) == 2 and first.params > 0 and first.macs > 0
    assert (tmp_path / "a/runs/loop/history.csv").read_text().startswith("epoch,train_loss,train_top1,val_loss")
    assert (tmp_path / "a/runs/loop/search/genotype.json").is_file()
    state_a = load_checkpoint(first.checkpoint)["model"]
    state_b = load_checkpoint(second.checkpoint)["model"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert [row["train_loss"] for row in first.history] == [row["train_loss"] for row in second.history]


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reference = loop.train_manual(_recipe(tmp_path / "ref"), digits8)
    calls = {"n": 0}
    real_evaluate = loop.evaluate_split

    def crash_in_second_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_split", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        loop.train_manual(_recipe(tmp_path / "cut"), digits8)
    assert load_checkpoint(tmp_path / "cut/runs/loop" / loop.CHECKPOINT)["epoch"] == 1
    monkeypatch.setattr(loop, "evaluate_split", real_evaluate)
    resumed = loop.train_manual(_recipe(tmp_path / "cut"), digits8, resume=True)
    assert resumed.resumed_from_epoch == 1
    expected = load_checkpoint(reference.checkpoint)["model"]
    actual = load_checkpoint(resumed.checkpoint)["model"]
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_resume_refuses_a_different_recipe(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    loop.train_manual(_recipe(tmp_path, epochs=1), digits8)
    with pytest.raises(DhaError, match="different recipe"):
        loop.train_manual(_recipe(tmp_path, epochs=2, lr=0.01), digits8, resume=True)


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    loop.train_manual(_recipe(tmp_path, epochs=1), digits8)
    checkpoint = tmp_path / "runs/loop" / loop.CHECKPOINT
    before = checkpoint.read_bytes()
    monkeypatch.setattr(loop.F, "cross_entropy", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(DhaError, match="loss became nan"):
        loop.train_manual(_recipe(tmp_path, epochs=1), digits8)
    assert checkpoint.read_bytes() == before
