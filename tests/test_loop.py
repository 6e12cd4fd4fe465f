"""The one training loop: schedule, every variant, reproducibility, resume, NaN handling, outputs."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from cli.summaries import search_rows
from dha_pipeline.data.cache import build_dataset, save_cache
from dha_pipeline import progress
from dha_pipeline.derive import derive_child
from dha_pipeline.errors import DhaError
from dha_pipeline.layout import RunLayout
from dha_pipeline.recipe import Recipe, TrainConfig, recipe_from_dict
from dha_pipeline.search import loop
from dha_pipeline.search.run import SearchOutcome, run_search
from dha_pipeline.checkpoint import load_checkpoint
from dha_pipeline.search.schedule import learning_rate

ROOT = Path(__file__).resolve().parents[1]


def _raw(tmp_path: Path, search: dict | None = None, **train: object) -> dict:
    return {"name": "loop", "runs_dir": str(tmp_path / "runs"), "device": "cpu",
            "data": {"image_size": 8, "channels": "1", "train_subset": 400},
            "model": {"init_channels": 4, "layers": 3, "auxiliary": True, "drop_path": 0.1},
            "train": {"epochs": 2, "batch_size": 64, **train},
            "augment": {"crop_padding": 1, "hflip": False, "cutout": 2},
            "search": {"tensorboard": "off", **(search or {"mode": "manual", "components": []})}}


def _recipe(tmp_path: Path, search: dict | None = None, **train: object) -> Recipe:
    return recipe_from_dict(_raw(tmp_path, search, **train))


DHA = {"mode": "joint", "components": ["nas", "da", "hpo"], "search_epochs": 1}
MOVING = {**DHA, "arch_lr": 0.5}
"""DHA whose codes move far enough in one epoch of this tiny run for the recovery to change the architecture
(at the recipes' 0.03 the faithful recovery keeps the starting support here)."""


@pytest.fixture(scope="module")
def digits8():  # type: ignore[no-untyped-def]
    return build_dataset(recipe_from_dict(_raw(Path("unused"))).data)


def _layout(tmp_path: Path) -> RunLayout:
    return RunLayout.of(tmp_path / "runs", tmp_path / "exports", "loop")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["network"]


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
    ema = {"ema_epochs": 0.5} if search == DHA else {}  # DHA also averages its weights over the training phase
    raw = _raw(tmp_path, search, lr_batch=128, **ema)  # lr 0.05 stated for batch 128: batch 64 starts at 0.025
    raw["hpo"] = {"hyper_lr": 0.2, **hpo}
    raw["augment"]["fraction_lr"] = 1.0  # p learned (a setting; the default fixes it)
    raw["search"]["tensorboard"] = "auto" if search == DHA else "off"  # the event files are read back for DHA
    outcome = run_search(recipe_from_dict(raw), digits8)
    layout = _layout(tmp_path)
    assert [row["epoch"] for row in outcome.history] == [1, 2]
    assert all(math.isfinite(row["train_loss"]) for row in outcome.history)
    summary = json.loads(layout.summary.read_text())
    assert summary["mode"] == search["mode"] and summary["components"] == sorted(search["components"])
    assert layout.genotype.is_file() and layout.plot("architecture").read_bytes().startswith(b"\x89PNG")
    assert layout.result.is_file()
    if "nas" in search["components"]:
        assert [row["phase"] for row in outcome.history] == ["search", "train"]
        assert layout.log("arch").is_file() and layout.plot("arch_weights").is_file()
    else:
        assert [row["phase"] for row in outcome.history] == ["train", "train"]
    if "da" in search["components"]:
        policy = layout.log("policy").read_text().splitlines()
        epochs_with_policy = 1 if search["mode"] == "sequential" else 2
        assert policy[0].startswith("epoch,entropy,max_entropy,kl_to_start,top1,top1_p")
        assert len(policy) == 1 + epochs_with_policy
        assert layout.plot("policy_heatmap").is_file()
        top_pair, top_probability = next(iter(summary["da_policy"].items()))
        assert "+" in top_pair and top_probability > 1.05 / 196, "tau must have left the uniform policy"
        augment = summary["hyperparameters"]["augment"]
        assert augment["form"] == "learned_fraction" and augment["learned"] is True
        assert outcome.history[-1]["aug_fraction"] == augment["fraction"] != 0.5, "p must move"
    else:
        assert summary["da_policy"] is None and "policy_entropy" not in outcome.history[-1]
    hparams = list(csv.DictReader(layout.log("hparams").open()))
    assert [int(row["epoch"]) for row in hparams] == [1, 2]
    last = outcome.history[-1]
    if "hpo" in search["components"]:
        assert layout.plot("hparams").is_file()
        assert last["weight_decay"] != pytest.approx(3e-4, rel=1e-9), "wd must move under hpo"
        assert last["lr"] != pytest.approx(0.025, rel=1e-9), "the base lr must move under hpo"
        assert 0.5e-4 <= last["lr"] <= 0.25, "HPO's lr bounds moved with the batch's factor"
        assert summary["hyperparameters"]["learned"] is True
    else:
        assert last["weight_decay"] == 3e-4 and last["lr"] == pytest.approx(0.025)
    derived = summary["hyperparameters"]["lr_from_batch"]
    assert derived == {"lr": pytest.approx(0.025), "stated_lr": 0.05, "stated_for_batch": 128, "global_batch": 64,
                       "factor": 0.5, "rule": "linear"}
    assert last["scheduled_lr"] == pytest.approx(last["lr"] * float(hparams[-1]["schedule_factor"]))
    assert summary["hyperparameters"]["lr"] == last["lr"], "summaries report eta, not the scheduled lr"
    child, gap = derive_child(layout.result, tmp_path / "child.pt", tmp_path / "genotype.json")
    assert gap <= 1e-5
    assert child.info["mode"] == search["mode"] and child.info["genotype"] == summary["genotype"]
    if search == DHA:
        _check_tensorboard(layout)
        _check_weight_average(layout, outcome)


def _check_weight_average(layout: RunLayout, outcome: SearchOutcome) -> None:
    """The average starts with the training phase (epoch 2's 6 steps), and the result holds the weights chosen
    on val: the average when it validated higher, else the last weights."""
    state = load_checkpoint(outcome.checkpoint)["learners"]["ema"]["average"]
    assert int(state["n_averaged"]) == 6, "only the training phase's 6 steps (epoch 2) are averaged"
    summary = json.loads(layout.summary.read_text())["weight_average"]
    assert summary["decay"] == pytest.approx(math.exp(-1 / 3)) and summary["val_top1"] is not None
    assert summary["used"] == (summary["val_top1"] > summary["last_val_top1"])
    averaged = {key.removeprefix("module."): value for key, value in state.items() if key.startswith("module.")}
    chosen = averaged if summary["used"] else _weights(outcome.checkpoint)
    result = load_checkpoint(layout.result)["state_dict"]
    assert all(torch.equal(result[key], chosen[key]) for key in result), "the result holds the chosen weights"


def _check_tensorboard(layout: RunLayout) -> None:
    """The event files read back: per-epoch scalars, frozen points, the plots as images, the settings as hparams."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(layout.tensorboard), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    for tag in ("epoch/val_top1", "epoch/train_loss", "epoch/lr", "epoch/aug_fraction", "epoch/policy_entropy",
                "epoch/frozen_points"):
        assert [event.step for event in events.Scalars(tag)] == [1, 2], tag
    history = list(csv.DictReader(layout.history.open()))
    assert events.Scalars("epoch/val_top1")[-1].value == pytest.approx(float(history[-1]["val_top1"]))
    assert {"plots/policy_heatmap", "plots/arch_weights", "plots/learning_curves"} <= set(tags["images"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams"), "the settings as hparams"
    assert events.Scalars("hparam/val_top1")[-1].value == pytest.approx(float(history[-1]["val_top1"]))


def test_sequential_trains_the_derived_network_from_fresh_weights(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Sequential mode: once the search phase ends, the plain network of the genotype it found is built anew
    (fresh weights and BatchNorm statistics, no momentum, a uniform policy, eta at the recipe's values) and
    that network trains on; nothing is inherited from the supernet."""
    recipe = _recipe(tmp_path, {**DHA, "mode": "sequential"})
    run = loop.SearchRun(recipe, digits8)
    supernet = run.network
    at_switch = {}
    real_build = loop.SearchRun.build

    def snapshot(self, components, genotype=None):  # type: ignore[no-untyped-def]
        at_switch["searched"] = self.arch.genotype()
        at_switch["supernet"] = {k: v.clone() for k, v in self.network.state_dict().items()}
        real_build(self, components, genotype)
        at_switch.update(components=sorted(components), genotype=genotype, momentum=len(self.theta.state),
                         network={k: v.clone() for k, v in self.network.state_dict().items()},
                         entropy=self.policy.entropy(), lr=self.hyper.lr)

    monkeypatch.setattr(loop.SearchRun, "build", snapshot)
    run.run()
    assert [row["phase"] for row in run.history] == ["search", "train"]
    assert at_switch["components"] == ["da", "hpo"] and at_switch["genotype"] == at_switch["searched"]
    assert run.arch.fixed and run.network is not supernet and run.arch.genotype() == at_switch["searched"]
    fresh, searched = at_switch["network"], at_switch["supernet"]
    running_means = [key for key in fresh if key.endswith("running_mean")]
    assert running_means and all(not fresh[key].any() for key in running_means), "BatchNorm statistics start anew"
    assert any(searched[key].any() for key in searched if key.endswith("running_mean")), "the supernet had trained"
    shared = [key for key in fresh if key in searched and fresh[key].shape == searched[key].shape
              and fresh[key].is_floating_point() and "running" not in key]
    assert shared and not any(torch.equal(fresh[key], searched[key]) for key in shared), "no weight is inherited"
    assert at_switch["momentum"] == 0 and at_switch["lr"] == pytest.approx(0.05, rel=1e-6)
    assert at_switch["entropy"] == pytest.approx(run.policy.policy.max_entropy), "the policy starts uniform"
    trained = run.network.state_dict()
    assert any(not torch.equal(trained[key], fresh[key]) for key in shared), "then the derived network trains"
    monkeypatch.undo()
    resumed = loop.SearchRun(recipe, digits8)  # a resume in the train phase rebuilds the derived network
    assert resumed.restore() and resumed.arch.fixed and resumed.arch.genotype() == run.arch.genotype()
    assert all(torch.equal(value, trained[key]) for key, value in resumed.network.state_dict().items())
    assert resumed.policy.state_dict()["policy"]["tau"].equal(run.policy.state_dict()["policy"]["tau"])


def test_a_joint_run_moves_tau_b_lr_and_wd(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    """Every learner of the paper learns in one run: the policy, the architecture code, and eta."""
    recipe = _recipe(tmp_path, MOVING)
    run = loop.SearchRun(recipe, digits8)
    initial_genotype = run.arch.genotype()
    initial_codes = [node.b.detach().clone() for _, node in run.arch.code.nodes()]
    initial_tau = run.policy.policy.tau.detach().clone()
    run.run()
    assert all(not torch.equal(b, node.b) for b, (_, node) in zip(initial_codes, run.arch.code.nodes()))
    assert run.arch.genotype() != initial_genotype, "the recovered architecture must leave the initial random support"
    assert not torch.equal(run.policy.policy.tau, initial_tau)
    assert run.policy.entropy() < run.policy.policy.max_entropy
    assert run.hyper.lr != recipe.train.lr and run.hyper.weight_decay != recipe.train.weight_decay


def test_training_is_reproducible(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    first = run_search(_recipe(tmp_path / "a", DHA), digits8)
    second = run_search(_recipe(tmp_path / "b", DHA), digits8)
    state_a, state_b = _weights(first.checkpoint), _weights(second.checkpoint)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert [row["train_loss"] for row in first.history] == [row["train_loss"] for row in second.history]
    assert first.genotype == second.genotype


def _cut_in_second_epoch_then_resumed(recipe: Recipe, data, monkeypatch) -> SearchOutcome:  # type: ignore[no-untyped-def]
    """Interrupt a run at its second validation (the checkpoint holds epoch 1), then resume it to the end."""
    calls = {"n": 0}
    real_validate = loop.SearchRun.validate

    def crash_in_second_epoch(self):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(self)

    monkeypatch.setattr(loop.SearchRun, "validate", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_search(recipe, data)
    assert load_checkpoint(recipe.layout.checkpoint)["epoch"] == 1
    monkeypatch.setattr(loop.SearchRun, "validate", real_validate)
    return run_search(recipe, data, resume=True)


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reference = run_search(_recipe(tmp_path / "ref", DHA), digits8)
    resumed = _cut_in_second_epoch_then_resumed(_recipe(tmp_path / "cut", DHA), digits8, monkeypatch)
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
    checkpoint = _layout(tmp_path / "killed").checkpoint
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
    expected = _weights(_layout(tmp_path / "ref").checkpoint)
    actual = _weights(checkpoint)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


def test_resume_refuses_a_different_recipe(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    run_search(_recipe(tmp_path, epochs=1), digits8)
    with pytest.raises(DhaError, match="different recipe"):
        run_search(_recipe(tmp_path, epochs=2, lr=0.01), digits8, resume=True)


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    run_search(_recipe(tmp_path, epochs=1), digits8)
    checkpoint = _layout(tmp_path).checkpoint
    before = checkpoint.read_bytes()
    monkeypatch.setattr(loop.F, "cross_entropy",
                        lambda logits, *a, **k: torch.full((len(logits),), float("nan"), requires_grad=True))
    with pytest.raises(DhaError, match="loss became non-finite at epoch 1, step 1"):
        run_search(_recipe(tmp_path, epochs=1), digits8)
    assert checkpoint.read_bytes() == before


def test_budget_rejects_proposals_over_the_parameter_cap(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    initial = loop.SearchRun(_recipe(tmp_path / "fresh", MOVING), digits8).arch.genotype()
    free = run_search(_recipe(tmp_path / "free", MOVING), digits8)
    assert free.genotype != initial, "positive control: without a budget the architecture step moves the genotype"
    capped = run_search(_recipe(tmp_path / "capped", {**MOVING, "max_params": 1}), digits8)
    assert capped.genotype == initial, "every proposal exceeds 1 parameter, so x_last must stay"
    assert load_checkpoint(capped.checkpoint)["genotype"] == initial.to_dict()


def test_minutes_budget_stops_the_run_within_a_step(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A clock that moves one second per reading: a 3-second budget ends the run after the third step of the
    first epoch (of 6), not at the epoch's end; the epoch is closed, saved and reported as stopped on time."""
    seconds = iter(range(10**6))
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: float(next(seconds))))
    steps = []
    real_step = loop.SearchRun.train_step
    monkeypatch.setattr(loop.SearchRun, "train_step", lambda run, *batch: steps.append(1) or real_step(run, *batch))
    outcome = run_search(_recipe(tmp_path, {**DHA, "budget_minutes": 0.05}, epochs=50), digits8)
    assert len(outcome.history) == 1 and load_checkpoint(outcome.checkpoint)["epoch"] == 1
    summary = json.loads(_layout(tmp_path).summary.read_text())
    budget = summary["budget"]
    assert budget["steps_per_epoch"] == 6 and budget["spent"] is True
    assert (budget["stopped_in_epoch"], budget["stopped_after_step"]) == (1, len(steps)) and len(steps) <= 3
    assert budget["trained_seconds"] >= 3.0
    rows = search_rows({**summary, "network": {}, "result": "", "resumed_from": None})
    assert "stopped on time in epoch 1" in rows["minutes budget"]


@pytest.fixture(scope="module")
def fp32_manual(tmp_path_factory: pytest.TempPathFactory, digits8) -> SearchOutcome:  # type: ignore[no-untyped-def]
    """The reference for the GPU-path settings: plain training in fp32, NCHW, eager (no learned eta or policy,
    whose hyper-gradient signs would turn rounding differences into different trajectories)."""
    tmp = tmp_path_factory.mktemp("fp32")
    return run_search(_recipe(tmp, epochs=1), digits8)


@pytest.mark.parametrize("setting, tolerance", [
    ({"precision": "bf16"}, 2e-2),  # bf16 keeps ~3 significant digits in the forward: a 2% band on the loss
    ({"channels_last": "on"}, 1e-3),  # the same arithmetic in another memory order: rounding only
    ({"compile": "default"}, 1e-3),  # the same graph, traced by dynamo: rounding only
])
def test_gpu_path_settings_train_like_the_reference(tmp_path: Path, digits8, fp32_manual, monkeypatch,  # type: ignore[no-untyped-def]
                                                     setting: dict, tolerance: float) -> None:
    """bf16 autocast, channels_last and the compiled forward of a fixed network train as the fp32 eager
    run does. On CPU the compiled forward is traced with dynamo's eager backend: inductor's C++ build
    takes minutes on two cores, and what is tested here is that the loop's forward survives capture."""
    real_compile = torch.compile
    compiled = []

    def eager_backend(function, **options):  # type: ignore[no-untyped-def]
        compiled.append(options["mode"])
        return real_compile(function, backend="eager", dynamic=options["dynamic"])

    monkeypatch.setattr(loop.torch, "compile", eager_backend)
    outcome = run_search(_recipe(tmp_path, epochs=1, **setting), digits8)
    assert compiled == ([setting["compile"]] if "compile" in setting else [])
    expected, actual = fp32_manual.history[-1], outcome.history[-1]
    assert actual["train_loss"] == pytest.approx(expected["train_loss"], rel=tolerance)
    assert math.isfinite(actual["val_loss"])


def test_warmup_known_start_target_and_cap_run_and_resume_exactly(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 27's settings together: two warm-up epochs (no recovery, b waits), a start at DARTS-V2, a params
    target at DARTS-V2's cost and the cap on parameter-free ops; a run cut in the warm-up resumes exactly."""
    search = {**DHA, "warmup_epochs": 2, "warmup_redraw": 0.25, "init": "known", "target": "params"}

    def recipe(directory: Path) -> Recipe:
        raw = _raw(directory, search, epochs=3)
        raw["model"]["max_parameter_free"] = 2
        return recipe_from_dict(raw)

    reference = run_search(recipe(tmp_path / "ref"), digits8)
    assert [row["phase"] for row in reference.history] == ["warmup", "warmup", "search"]
    layout = _layout(tmp_path / "ref")
    arch_epochs = {int(row["epoch"]) for row in csv.DictReader(layout.log("arch").open())}
    assert arch_epochs == {3}, "the codes are recovered only once the warm-up is over"
    summary = json.loads(layout.summary.read_text())
    target = summary["target"]
    assert target["metric"] == "params" and target["in_band"] and target["child"] == summary["params"]
    table = search_rows({**summary, "network": {}, "result": layout.result, "resumed_from": None})
    assert "in band" in table["params target"], "the search table shows it"
    normal = reference.genotype.normal
    assert sum(op in ("skip_connect", "max_pool_3x3", "avg_pool_3x3") for op, _ in normal) <= 2
    resumed = _cut_in_second_epoch_then_resumed(recipe(tmp_path / "cut"), digits8, monkeypatch)
    assert resumed.resumed_from == "epoch 2, step 0"
    expected, actual = _weights(reference.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert resumed.genotype == reference.genotype


def test_weight_average_resumes_exactly(tmp_path: Path, digits8, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A run cut after its first epoch (the average already started: manual mode trains from the first step)
    and resumed ends with the uninterrupted run's average, bit for bit."""
    manual = {"mode": "manual", "components": ["da", "hpo"]}
    reference = run_search(_recipe(tmp_path / "ref", manual, ema_epochs=0.5), digits8)
    resumed = _cut_in_second_epoch_then_resumed(_recipe(tmp_path / "cut", manual, ema_epochs=0.5), digits8,
                                                monkeypatch)
    expected = load_checkpoint(reference.checkpoint)["learners"]["ema"]["average"]
    actual = load_checkpoint(resumed.checkpoint)["learners"]["ema"]["average"]
    assert int(expected["n_averaged"]) == 12 and all(torch.equal(expected[k], actual[k]) for k in expected)
