"""The hyper learner: eta (learned or fixed) times the schedule, written into theta's optimizer by it alone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dha_pipeline.recipe import HpoConfig, TrainConfig
from dha_pipeline.search.hpo import HyperSGD
from dha_pipeline.search.hyper import HyperLearner
from dha_pipeline.search.schedule import schedule_factor

TRAIN = TrainConfig(epochs=4, lr=0.1, lr_min=0.0, warmup_epochs=1, weight_decay=1e-3)
STEPS = 5


def quadratic_step(theta: HyperSGD, weight: nn.Parameter, target: torch.Tensor) -> None:
    theta.zero_grad()
    ((weight - target) ** 2).sum().backward()


def test_fixed_eta_writes_the_recipe_values_times_the_schedule() -> None:
    weight = nn.Parameter(torch.zeros(3))
    theta = HyperSGD([weight], lr=123.0, weight_decay=9.0)
    hyper = HyperLearner(TRAIN, HpoConfig(), learned=False, steps_per_epoch=STEPS)
    for step in (0, 4, 11, 19):
        hyper.update(theta, step, elapsed_seconds=0.0)
        group = theta.param_groups[0]
        assert group["lr"] == pytest.approx(0.1 * schedule_factor(TRAIN, step, STEPS))
        assert group["weight_decay"] == 1e-3
    assert hyper.report() == {"lr": 0.1, "weight_decay": 1e-3, "learned": False,
                              "schedule": {"kind": "cosine", "lr_min": 0.0, "warmup_epochs": 1, "epochs": 4,
                                           "momentum": 0.9}}
    row = hyper.log_rows(7)[0]
    assert row["lr"] == 0.1 and row["scheduled_lr"] == pytest.approx(0.1 * row["schedule_factor"])


def test_learned_eta_moves_and_is_reported_before_the_schedule() -> None:
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(50))
    target = torch.randn(50)
    theta = HyperSGD([weight], lr=0.1, momentum=0.9, weight_decay=1e-3)
    hyper = HyperLearner(TRAIN, HpoConfig(hyper_lr=0.1), learned=True, steps_per_epoch=STEPS)
    for step in range(3 * STEPS):
        quadratic_step(theta, weight, target)
        hyper.update(theta, step, elapsed_seconds=0.0)
        assert theta.param_groups[0]["lr"] == pytest.approx(hyper.lr * schedule_factor(TRAIN, step, STEPS))
        assert theta.param_groups[0]["weight_decay"] == hyper.weight_decay
        theta.step()
    assert hyper.lr != 0.1 and hyper.weight_decay != 1e-3
    report = hyper.report()
    assert report["learned"] is True and report["lr"] == hyper.lr != hyper.scheduled_lr


def test_state_round_trip_continues_identically() -> None:
    weight = nn.Parameter(torch.ones(4))
    theta = HyperSGD([weight], lr=0.1)
    hyper = HyperLearner(TRAIN, HpoConfig(hyper_lr=0.3), learned=True, steps_per_epoch=STEPS)
    for step in range(4):
        quadratic_step(theta, weight, torch.zeros(4))
        hyper.update(theta, step, 0.0)
        theta.step()
    twin = HyperLearner(TRAIN, HpoConfig(hyper_lr=0.3), learned=True, steps_per_epoch=STEPS)
    twin.load_state_dict(hyper.state_dict())
    assert (twin.lr, twin.weight_decay, twin.scheduled_lr) == (hyper.lr, hyper.weight_decay, hyper.scheduled_lr)


def test_a_minutes_budget_moves_the_schedule_on() -> None:
    hyper = HyperLearner(TRAIN, HpoConfig(), learned=False, steps_per_epoch=STEPS, budget_minutes=1.0)
    assert hyper.position(2, elapsed_seconds=0.0) == 2
    assert hyper.position(2, elapsed_seconds=30.0) == 10  # half the minutes: half of the 20 steps
    assert math.isclose(schedule_factor(TRAIN, hyper.position(0, 60.0), STEPS), 0.0, abs_tol=1e-12)


def test_held_in_estimator_needs_its_batch() -> None:
    weight = nn.Parameter(torch.ones(2))
    theta = HyperSGD([weight], lr=0.1)
    hyper = HyperLearner(TRAIN, HpoConfig(estimator="held_in"), learned=True, steps_per_epoch=STEPS)
    with pytest.raises(ValueError, match="held-in"):
        hyper.update(theta, 0, 0.0)
    module = nn.Linear(2, 1)
    hyper.update(theta, 0, 0.0, (module, lambda: module(weight[None]).sum()))
    assert theta.param_groups[0]["lr"] == pytest.approx(hyper.scheduled_lr)


def test_a_learned_hyper_step_and_theta_step_read_nothing_back_from_the_device(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On a GPU a read of a device value (item, tolist, float, int, bool) makes the host wait for the
    device. After the first step (which has nothing to differentiate), eta's hyper-step and theta's step
    with a learned eta make none: every read of a tensor's value fails this test."""
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(20))
    target = torch.randn(20)
    theta = HyperSGD([weight], lr=0.1, momentum=0.9, weight_decay=1e-3, grad_clip=5.0)
    hyper = HyperLearner(TRAIN, HpoConfig(hyper_lr=0.1), learned=True, steps_per_epoch=STEPS)
    quadratic_step(theta, weight, target)
    hyper.update(theta, 0, 0.0)
    theta.step()

    def host_read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a tensor's value was read on the host inside the step")

    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    for step in range(1, 4):
        quadratic_step(theta, weight, target)
        hyper.update(theta, step, 0.0)
        theta.step()
    monkeypatch.undo()
    assert hyper.lr != 0.1, "eta moved"
