"""The one training loop: schedule, every variant, reproducibility, resume, NaN handling, outputs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dha_pipeline.data.cache import build_dataset, save_cache
from dha_pipeline.derive import derive_child
from dha_pipeline.errors import DhaError
from dha_pipeline.recipe import Recipe, TrainConfig, recipe_from_dict
from dha_pipeline.search import loop
from dha_pipeline.search.checkpoint import load_checkpoint
from dha_pipeline.search.schedule import learning_rate

ROOT = Path(__file__).resolve().parents[1]


def _raw(tmp_path: Path, search: dict | None = None, **train: object) -> dict:
    return {"name": "loop", "runs_dir": str(tmp_path / "runs"), "device": "cpu",
            "data": {"image_size": 8, "channels": "1", "train_subset": 400},
            "model": {"init_channels": 4, "layers": 3, "auxiliary": True, "drop_path": 0.1},
            "train": {"epochs": 2, "batch_size": 64, **train},
            "augment": {"crop_padding": 1, "hflip": False, "cutout": 2},
            "search": search or {"mode": "manual", "components": []}}


def _recipe(tmp_path: Path, search: dict | None = None, **train: object) -> Recipe:
    return recipe_from_dict(_raw(tmp_path, search, **train))


DHA = {"mode": "joint", "components": ["nas", "da", "hpo"], "search_epochs": 1}


@pytest.fixture(scope="module")
def digits8():  # type: ignore[no-untyped-def]
    return build_dataset(recipe_from_dict(_raw(Path("unused"))).data)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["parts"]["model"]


def test_learning_rate_warmup_then_cosine() -> None:
    config = TrainConfig(epochs=10, lr=0.1, lr_min=0.001, warmup_epochs=2)
    assert learning_rate(config, 0, 10) == pytest.approx(0.1 / 20)
    assert learning_rate(config, 19, 10) == pytest.approx(0.1)
    assert learning_rate(config, 20, 10) == pytest.approx(0.1)
    middle = learning_rate(config, 60, 10)
    assert middle == pytest.approx(0.001 + 0.5 * 0.099 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(config, 100, 10) == pytest.approx(0.001)
    values = [learning_rate(config, step, 10) for step in range(20, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


@pytest.mark.parametrize("search, hpo", [
    ({"mode": "manual", "components": ["da", "hpo"]}, {}),
    ({"mode": "joint", "components": ["nas"], "search_epochs": 1}, {}),
    ({"mode": "joint", "components": ["nas", "da"], "search_epochs": 1}, {}),
    ({"mode": "joint", "components": ["nas", "hpo"], "search_epochs": 1}, {"estimator": "held_in"}),
    (DHA, {}),
    ({"mode": "sequential", "components": ["nas", "da", "hpo"], "search_epochs": 1}, {}),
])
def test_every_variant_trains_and_leaves_its_logs(tmp_path: Path, digits8, search: dict, hpo: dict) -> None:  # type: ignore[no-untyped-def]
    raw = _raw(tmp_path, search)
    raw["hpo"] = {"hyper_lr": 0.2, **hpo}
    outcome = loop.run_search(recipe_from_dict(raw), digits8)
    run_dir = tmp_path / "runs/loop"
    assert [row["epoch"] for row in outcome.history] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) for row in outcome.history)
    summary = json.loads((run_dir / "search/summary.json").read_text())
    assert summary["mode"] == search["mode"] and summary["components"] == sorted(search["components"])
    assert (run_dir / "search/genotype.json").is_file() and (run_dir / "plots/cells.png").is_file()
    if "nas" in search["components"]:
        assert outcome.history[0]["phase"] == 1 and outcome.history[1]["phase"] == 2
        assert (run_dir / "search/arch.csv").is_file() and (run_dir / "plots/arch_weights.png").is_file()
    if "da" in search["components"]:
        policy = (run_dir / "search/policy.csv").read_text().splitlines()
        epochs_with_policy = 1 if search["mode"] == "sequential" else 2
        assert policy[0].startswith("epoch,entropy,max_entropy,top1,top1_p")
        assert len(policy) == 1 + epochs_with_policy
        assert (run_dir / "plots/policy_heatmap.png").is_file()
        assert summary["da_policy"]
    hparams = [json.loads(json.dumps(row)) for row in outcome.history]
    if "hpo" in search["components"]:
        assert (run_dir / "plots/hparams.png").is_file()
        assert hparams[-1]["weight_decay"] != pytest.approx(3e-4, rel=1e-9), "wd must move under hpo"
    else:
        assert hparams[0]["weight_decay"] == 3e-4
    child, gap = derive_child(run_dir / loop.CHECKPOINT, tmp_path / "child.pt")
    assert gap <= 1e-5
    assert child.info["mode"] == search["mode"] and child.info["genotype"] == summary["genotype"]


def test_sequential_reinitializes_the_derived_network(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    built = []
    real_build = loop.build_parts

    def record(recipe, data, device, components, genotype=None):  # type: ignore[no-untyped-def]
        built.append((sorted(components), genotype))
        return real_build(recipe, data, device, components, genotype)

    monkeypatch.setattr(loop, "build_parts", record)
    loop.run_search(_recipe(tmp_path, {**DHA, "mode": "sequential"}), digits8)
    assert built[0] == (["nas"], None)
    assert built[1][0] == ["da", "hpo"] and built[1][1] is not None


def test_training_is_reproducible(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    first = loop.run_search(_recipe(tmp_path / "a", DHA), digits8)
    second = loop.run_search(_recipe(tmp_path / "b", DHA), digits8)
    state_a, state_b = _weights(first.checkpoint), _weights(second.checkpoint)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert [row["train_loss"] for row in first.history] == [row["train_loss"] for row in second.history]
    assert first.genotype == second.genotype


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reference = loop.run_search(_recipe(tmp_path / "ref", DHA), digits8)
    calls = {"n": 0}
    real_evaluate = loop.evaluate_split

    def crash_in_second_epoch(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_split", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        loop.run_search(_recipe(tmp_path / "cut", DHA), digits8)
    assert load_checkpoint(tmp_path / "cut/runs/loop" / loop.CHECKPOINT)["epoch"] == 1
    monkeypatch.setattr(loop, "evaluate_split", real_evaluate)
    resumed = loop.run_search(_recipe(tmp_path / "cut", DHA), digits8, resume=True)
    assert resumed.resumed_from == "epoch 2, step 0"
    expected, actual = _weights(reference.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    """A `dha search` killed with SIGKILL mid-epoch and resumed ends exactly like an uninterrupted run."""
    overrides = ["train.checkpoint_every_steps=2", "train.epochs=3"]

    def recipe_file(directory: Path) -> Path:
        directory.mkdir(parents=True)
        raw = _raw(directory, DHA)
        save_cache(build_dataset(recipe_from_dict(raw).data), directory / "runs/loop/cache")
        lines = [f'runs_dir = "{directory / "runs"}"', 'name = "loop"', 'device = "cpu"']
        for section in ("data", "model", "train", "augment", "search"):
            lines.append(f"[{section}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in raw[section].items()]
        path = directory / "recipe.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def dha(*args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    reference = recipe_file(tmp_path / "ref")
    assert dha("search", str(reference), *sum((["--set", o] for o in overrides), [])).wait(timeout=300) == 0
    killed = recipe_file(tmp_path / "killed")
    process = dha("search", str(killed), *sum((["--set", o] for o in overrides), []))
    checkpoint = tmp_path / "killed/runs/loop" / loop.CHECKPOINT
    deadline = time.time() + 240
    while time.time() < deadline:
        if checkpoint.is_file():
            state = load_checkpoint(checkpoint)
            if state["epoch"] >= 1 and 0 < state["step_in_epoch"]:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    state = load_checkpoint(checkpoint)
    assert state["epoch"] < 3, "the run must have been killed before it finished"
    assert dha("search", str(killed), "--resume", *sum((["--set", o] for o in overrides), [])).wait(
        timeout=300) == 0
    expected = _weights(tmp_path / "ref/runs/loop" / loop.CHECKPOINT)
    actual = _weights(checkpoint)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_resume_refuses_a_different_recipe(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    loop.run_search(_recipe(tmp_path, epochs=1), digits8)
    with pytest.raises(DhaError, match="different recipe"):
        loop.run_search(_recipe(tmp_path, epochs=2, lr=0.01), digits8, resume=True)


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    loop.run_search(_recipe(tmp_path, epochs=1), digits8)
    checkpoint = tmp_path / "runs/loop" / loop.CHECKPOINT
    before = checkpoint.read_bytes()
    monkeypatch.setattr(loop.F, "cross_entropy",
                        lambda logits, *a, **k: torch.full((len(logits),), float("nan"), requires_grad=True))
    with pytest.raises(DhaError, match="loss became nan"):
        loop.run_search(_recipe(tmp_path, epochs=1), digits8)
    assert checkpoint.read_bytes() == before


def test_budget_rejects_proposals_over_the_parameter_cap(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    outcome = loop.run_search(_recipe(tmp_path, {**DHA, "max_params": 1}), digits8)
    state = load_checkpoint(outcome.checkpoint)
    initial = loop.SearchRun(_recipe(tmp_path / "fresh", {**DHA, "max_params": 1}), digits8).genotype()
    assert state["genotype"] == initial.to_dict(), "every proposal exceeds 1 parameter, so x_last must stay"


def test_minutes_budget_stops_the_run_early(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    outcome = loop.run_search(_recipe(tmp_path, {**DHA, "budget_minutes": 1e-4}, epochs=50), digits8)
    assert len(outcome.history) == 1, "the budget is spent within the first epoch, so the run stops after it"
    assert load_checkpoint(outcome.checkpoint)["epoch"] == 1
