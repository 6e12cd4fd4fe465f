"""tau's `val` signal: each augmented sample's alignment with the clean held-out gradient, by a central
difference with the step's draws replayed, and the step of tau it drives."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dha_pipeline.augment.ops import OP_NAMES
from dha_pipeline.augment.trivial_policy import TrivialPolicy
from dha_pipeline.data.cache import build_dataset
from dha_pipeline.recipe import recipe_from_dict
from dha_pipeline.search import loop
from dha_pipeline.search.alignment import sample_alignment
from dha_pipeline.search.hpo import HyperSGD, preserved_buffers
from dha_pipeline.search.random_state import RandomState


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Dropout(0.3),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def test_the_central_difference_is_each_samples_gradient_along_the_direction() -> None:
    """s_k from two replayed forward passes equals direction . grad l_k by autograd (BatchNorm in training mode
    and dropout masks included), and the weights, buffers and random stream are as they were. (A smooth
    activation: with ReLU a difference is exact only where no unit crosses its kink within +- eps.)"""
    network = _network().train()
    theta = HyperSGD(network.parameters(), lr=0.1)
    images, labels = torch.randn(12, 1, 6, 6), torch.randint(0, 3, (12,))
    state = RandomState.capture(torch.device("cpu"))
    losses = F.cross_entropy(network(images), labels, reduction="none")
    direction = [torch.randn_like(p) for p in theta.flat_params()]
    exact = torch.stack([sum((g * d).sum() for g, d in zip(torch.autograd.grad(loss, theta.flat_params(),
                                                                                 retain_graph=True), direction))
                         for loss in losses])

    def replay() -> torch.Tensor:
        with torch.no_grad(), preserved_buffers(network), state.replayed():
            return F.cross_entropy(network(images), labels, reduction="none")

    weights = {k: v.clone() for k, v in network.state_dict().items()}
    stream = torch.get_rng_state()
    estimate = sample_alignment(theta, direction, replay)
    assert estimate is not None
    torch.testing.assert_close(estimate, exact, rtol=2e-2, atol=2e-3 * exact.abs().max().item())
    assert all(torch.equal(value, network.state_dict()[key]) for key, value in weights.items())
    assert torch.equal(torch.get_rng_state(), stream)
    assert sample_alignment(theta, [torch.zeros_like(p) for p in theta.flat_params()], replay) is None


def test_choices_whose_samples_help_the_held_out_loss_gain() -> None:
    policy = TrivialPolicy(8, entropy_floor_fraction=0.0)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    rotate = OP_NAMES.index("rotate")
    for _ in range(100):
        sample = policy.sample(64, generator)
        alignment = torch.randn(64, generator=generator) - 1.0 * (sample.op1 == rotate).float()
        optimizer.zero_grad()
        policy.da_loss(sample, alignment).backward()
        optimizer.step()
    assert policy.probs()[rotate] < 0.5 / len(OP_NAMES), "rotate's samples hurt the held-out loss: it loses"


@pytest.fixture(scope="module")
def digits8():  # type: ignore[no-untyped-def]
    return build_dataset(recipe_from_dict(_raw(Path("unused"))).data)


def _raw(tmp_path: Path) -> dict:
    return {"name": "val_signal", "runs_dir": str(tmp_path / "runs"), "device": "cpu",
            "data": {"image_size": 8, "channels": "1", "train_subset": 256},
            "model": {"init_channels": 4, "layers": 3, "auxiliary": True, "drop_path": 0.2},
            "train": {"epochs": 1, "batch_size": 64},
            "augment": {"crop_padding": 1, "hflip": False, "start": "trivial_wide", "form": "paper",
                        "signal": "val", "signal_every": 2, "kl_weight": 1.0},
            "search": {"mode": "manual", "components": ["da"]}}


def test_in_a_run_tau_moves_on_its_steps_only_and_leaves_the_training_state_alone(tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                                  digits8, monkeypatch) -> None:
    run = loop.SearchRun(recipe_from_dict(_raw(tmp_path)), digits8)
    run.network.train()
    seen: list[tuple[bool, bool, bool]] = []
    real = run.policy.after_theta_step

    def watched(step):  # type: ignore[no-untyped-def]
        tau = run.policy.policy.tau.detach().clone()
        weights = {k: v.clone() for k, v in run.network.state_dict().items()}
        stream = torch.get_rng_state()
        real(step)
        unchanged = all(torch.equal(v, run.network.state_dict()[k]) for k, v in weights.items())
        same_stream = torch.equal(stream, torch.get_rng_state())
        seen.append((not torch.equal(tau, run.policy.policy.tau), unchanged, same_stream))

    monkeypatch.setattr(run.policy, "after_theta_step", watched)
    for index in range(4):
        images, labels = run.source.splits["train"].take(torch.arange(64 * index, 64 * (index + 1)))
        run.step_in_epoch = index
        run.train_step(images, labels)
    assert [moved for moved, _, _ in seen] == [True, False, True, False], "tau steps every signal_every steps"
    assert all(unchanged for _, unchanged, _ in seen), "weights and BatchNorm statistics are restored"
    assert [same for _, _, same in seen] == [False, True, False, True], "only the held-out batch draws masks"
    assert run.policy.report()["policy"]["signal"] == "val" and run.policy.kl_to_start() > 0
