"""Hyper-gradient HPO: the momentum-SGD step, its closed-form hypergradient, the normalized hyper-step."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dha_pipeline.search.hpo import (
    HyperOptimizer,
    HyperParams,
    HyperSGD,
    held_in_gradients,
    hypergradient,
    next_batch_gradients,
    normalized_hypergradient,
)

MOMENTUM = 0.9


def write_eta(optimizer: HyperSGD, hyper: HyperOptimizer) -> None:
    """What the hyper learner does after a hyper-step (no schedule here): eta into every param group."""
    for group in optimizer.param_groups:
        group["lr"], group["weight_decay"] = hyper.params.lr, hyper.params.wd


def least_squares(seed: int = 0) -> tuple[nn.Linear, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A float64 nn.Linear(20, 10) (210 parameters) and three regression batches."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Linear(20, 10).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
    batches = [(torch.randn(32, 20, generator=generator, dtype=torch.float64),
                torch.randn(32, 10, generator=generator, dtype=torch.float64)) for _ in range(3)]
    return model, batches


def mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.mse_loss(model(batch[0]), batch[1])


def two_groups(model: nn.Linear, lr: float, wd: float, grad_clip: float) -> HyperSGD:
    """Weights decay, the bias does not: the hypergradient must add up the groups correctly."""
    return HyperSGD([{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}],
                    lr=lr, momentum=MOMENTUM, weight_decay=wd, grad_clip=grad_clip)


def set_eta(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["weight_decay"] = lr, wd
    optimizer.param_groups[1]["lr"] = lr


def step_on(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    optimizer.zero_grad()
    mse(model, batch).backward()
    optimizer.step()


@pytest.mark.parametrize("grad_clip", [0.0, 0.5])
def test_hypergradient_matches_central_finite_differences(grad_clip: float) -> None:
    model, batches = least_squares()
    lr, wd = 0.05, 0.02
    optimizer = two_groups(model, lr, wd, grad_clip)
    for _ in range(3):  # build up a velocity from earlier steps
        step_on(model, optimizer, batches[0])
    warm_model, warm_state = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())

    def loss_after_step(log_lr: float, log_wd: float) -> float:
        model.load_state_dict(warm_model)
        optimizer.load_state_dict(copy.deepcopy(warm_state))  # loading aliases the momentum buffers
        set_eta(optimizer, math.exp(log_lr), math.exp(log_wd))
        step_on(model, optimizer, batches[1])
        return mse(model, batches[2]).item()

    base = loss_after_step(math.log(lr), math.log(wd))
    grads = torch.autograd.grad(mse(model, batches[2]), list(model.parameters()))
    assert base == mse(model, batches[2]).item()
    d_log_lr, d_log_wd = hypergradient(optimizer, list(grads))
    h, log_lr, log_wd = 1e-4, math.log(lr), math.log(wd)
    fd_lr = (loss_after_step(log_lr + h, log_wd) - loss_after_step(log_lr - h, log_wd)) / (2 * h)
    fd_wd = (loss_after_step(log_lr, log_wd + h) - loss_after_step(log_lr, log_wd - h)) / (2 * h)
    assert d_log_lr == pytest.approx(fd_lr, rel=1e-3)
    assert d_log_wd == pytest.approx(fd_wd, rel=1e-3)
    assert abs(d_log_wd) > 0


@pytest.mark.parametrize("grad_clip", [0.0, 0.3])
def test_step_equals_torch_sgd(grad_clip: float) -> None:
    model, batches = least_squares()
    reference = copy.deepcopy(model)
    ours = HyperSGD(model.parameters(), lr=0.1, momentum=MOMENTUM, weight_decay=1e-2, grad_clip=grad_clip)
    theirs = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=MOMENTUM, weight_decay=1e-2)
    for step in range(5):
        batch = batches[step % 3]
        step_on(model, ours, batch)
        theirs.zero_grad()
        mse(reference, batch).backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(reference.parameters(), grad_clip)
        theirs.step()
        for p, q in zip(model.parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"],
                                       rtol=1e-12, atol=1e-12)


def run_quadratic(lr: float, steps: int, lr_bounds: tuple[float, float] = (1e-7, 1e3),
                  hyper_lr: float = 0.05, anchor: float = 0.0) -> list[float]:
    """Hyper-steps on 1/2 (theta - c)^T H (theta - c), H diagonal in [0.1, 1], with next_batch gradients."""
    generator = torch.Generator().manual_seed(0)
    curvature = torch.linspace(0.1, 1.0, 300, dtype=torch.float64)
    centre = torch.randn(300, generator=generator, dtype=torch.float64)
    theta = nn.Parameter(torch.zeros(300, dtype=torch.float64))
    optimizer = HyperSGD([theta], lr=lr, momentum=MOMENTUM)
    hyper = HyperOptimizer(HyperParams.from_values(lr, 1e-4, lr_bounds, (1e-6, 1e-2)), hyper_lr, anchor=anchor)
    write_eta(optimizer, hyper)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (curvature * (theta - centre) ** 2).sum()).backward()
        before = (float(hyper.params.log_lr), float(hyper.params.log_wd))
        normalized = hyper.step(optimizer, hyper.gradients(optimizer))
        if normalized is not None:  # normalized descent plus the anchor's pull, then the clamp
            for after, old, h, start, (low, high) in zip(
                    (hyper.params.log_lr, hyper.params.log_wd), before, normalized, hyper.start,
                    ((lr_bounds[0], lr_bounds[1]), (1e-6, 1e-2)), strict=True):
                expected = old - hyper_lr * float(h) - anchor * (old - float(start))
                expected = min(max(expected, math.log(low)), math.log(high))
                assert float(after) == pytest.approx(expected, abs=1e-12)
        write_eta(optimizer, hyper)
        optimizer.step()
        history.append(hyper.params.lr)
        assert lr_bounds[0] <= hyper.params.lr <= lr_bounds[1]
        assert 1e-6 <= hyper.params.wd <= 1e-2
    return history


def test_hyper_step_raises_a_far_too_small_learning_rate() -> None:
    history = run_quadratic(1e-5, steps=60)
    assert history[-1] > 10 * 1e-5
    assert history[-1] > history[len(history) // 2] > history[0]


def test_hyper_step_lowers_a_diverging_learning_rate() -> None:
    diverging = 2 * (1 + MOMENTUM) / 1.0 * 3  # 3x the heavy-ball stability limit for lambda_max = 1
    history = run_quadratic(diverging, steps=40)
    assert history[-1] < 2 * (1 + MOMENTUM) < diverging  # back inside the stable range


def test_anchor_holds_eta_within_its_factor_of_the_start() -> None:
    free = run_quadratic(1e-5, steps=150)
    held = run_quadratic(1e-5, steps=150, anchor=0.05)  # hyper_lr / anchor = 1: at most a factor e
    assert free[-1] > 100 * 1e-5
    assert 1.5 * 1e-5 < held[-1] <= math.e * 1e-5 * (1 + 1e-9)  # strong evidence still moves it, boundedly
    with pytest.raises(ValueError, match="anchor"):
        HyperOptimizer(HyperParams.from_values(0.1, 1e-4, (1e-4, 0.5), (1e-6, 1e-2)), 0.02, anchor=1.5)


def test_bounds_are_respected() -> None:
    history = run_quadratic(1e-5, steps=60, lr_bounds=(1e-6, 1e-4))
    assert history[-1] == pytest.approx(1e-4)
    params = HyperParams.from_values(5.0, 0.0, (1e-4, 0.5), (1e-6, 1e-2))
    assert params.lr == pytest.approx(0.5) and params.wd == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="bounds"):
        HyperParams.from_values(0.1, 1e-4, (1e-4, 0.5), (0.0, 1e-2))


def test_normalized_hypergradient_is_a_cosine_and_zero_before_any_step() -> None:
    model, batches = least_squares()
    optimizer = two_groups(model, 0.05, 0.02, 0.0)
    assert normalized_hypergradient(optimizer, [torch.ones_like(p) for p in model.parameters()]) == (0.0, 0.0)
    step_on(model, optimizer, batches[0])
    optimizer.zero_grad()
    mse(model, batches[1]).backward()
    h_lr, h_wd = normalized_hypergradient(optimizer, next_batch_gradients(optimizer))
    assert -1.0 <= h_lr <= 1.0 and -1.0 <= h_wd <= 1.0 and h_lr != 0.0
    scaled = [10.0 * g for g in next_batch_gradients(optimizer)]
    assert normalized_hypergradient(optimizer, scaled) == pytest.approx((h_lr, h_wd))


def test_parameters_that_sat_out_the_last_step_are_ignored() -> None:
    model, batches = least_squares()
    idle = nn.Parameter(torch.ones(5, dtype=torch.float64))
    optimizer = HyperSGD([{"params": list(model.parameters()) + [idle]}], lr=0.05, momentum=MOMENTUM,
                         weight_decay=0.01)
    optimizer.zero_grad()
    (mse(model, batches[0]) + idle.sum()).backward()
    optimizer.step()
    step_on(model, optimizer, batches[1])  # idle gets no gradient: it keeps a stale velocity
    grads = list(torch.autograd.grad(mse(model, batches[2]), list(model.parameters())))
    with_idle = hypergradient(optimizer, grads + [torch.ones(5, dtype=torch.float64)])
    without = hypergradient(optimizer, grads + [None])
    assert with_idle == pytest.approx(without, rel=1e-12)


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 8)
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.linear(x))))


def bn_setup() -> tuple[BatchNormNet, HyperSGD, Callable[[], torch.Tensor]]:
    torch.manual_seed(0)
    model = BatchNormNet()
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    optimizer = HyperSGD(model.parameters(), lr=0.1, momentum=MOMENTUM, weight_decay=1e-3, grad_clip=5.0)
    optimizer.zero_grad()
    F.mse_loss(model(x), y).backward()
    optimizer.step()
    held_x, held_y = torch.randn(16, 6), torch.randn(16, 1)
    return model, optimizer, lambda: F.mse_loss(model(held_x), held_y)


def test_held_in_estimator_leaves_batchnorm_statistics_and_grads_alone() -> None:
    model, optimizer, closure = bn_setup()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    step_grads = [p.grad.clone() for p in model.parameters()]
    hyper = HyperOptimizer(HyperParams.from_values(0.1, 1e-3, (1e-4, 1.0), (1e-6, 1e-2)), 0.02, "held_in")
    grads = hyper.gradients(optimizer, model, closure)
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), step_grads))
    assert all(torch.equal(g, h) for g, h in zip(grads, held_in_gradients(model, optimizer, closure)))
    optimizer.zero_grad()
    closure().backward()  # the same loss through p.grad, as next_batch would see it (moves the statistics)
    assert not torch.equal(model.norm.running_mean, buffers["norm.running_mean"])
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)
    assert hypergradient(optimizer, grads) == pytest.approx(hypergradient(optimizer, next_batch_gradients(optimizer)))
    with pytest.raises(ValueError, match="closure"):
        hyper.gradients(optimizer)
    with pytest.raises(ValueError, match="estimator"):
        HyperOptimizer(hyper.params, 0.02, "lookahead")


def test_state_round_trip() -> None:
    model, batches = least_squares()
    optimizer = two_groups(model, 0.05, 0.02, 1.0)
    hyper = HyperOptimizer(HyperParams.from_values(0.05, 0.02, (1e-4, 0.5), (1e-6, 0.1)), 0.02, anchor=0.1)
    write_eta(optimizer, hyper)
    for batch in batches[:2]:
        optimizer.zero_grad()
        mse(model, batch).backward()
        hyper.step(optimizer, hyper.gradients(optimizer))
        write_eta(optimizer, hyper)
        optimizer.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "hyper": hyper.state_dict()},
               buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin, _ = least_squares(seed=1)
    twin.load_state_dict(saved["model"])
    twin_optimizer = two_groups(twin, 1.0, 1.0, 1.0)
    twin_optimizer.load_state_dict(saved["optimizer"])
    twin_hyper = HyperOptimizer(HyperParams.from_values(0.3, 0.001, (1e-5, 1.0), (1e-7, 1.0)), 0.5, "held_in")
    twin_hyper.load_state_dict(saved["hyper"])
    assert (twin_hyper.params.lr, twin_hyper.params.wd) == (hyper.params.lr, hyper.params.wd)
    assert twin_hyper.state_dict()["params"]["lr_high"] == 0.5 and twin_hyper.estimator == "next_batch"
    assert twin_hyper.anchor == 0.1 and math.exp(float(twin_hyper.start[0])) == pytest.approx(0.05)
    for m, opt, hyp in ((model, optimizer, hyper), (twin, twin_optimizer, twin_hyper)):
        opt.zero_grad()
        mse(m, batches[2]).backward()
        normalized = hyp.step(opt, hyp.gradients(opt))
        assert normalized is not None and float(normalized[0]) != 0.0
        write_eta(opt, hyp)
        opt.step()
    assert (twin_hyper.params.lr, twin_hyper.params.wd) == (hyper.params.lr, hyper.params.wd)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
