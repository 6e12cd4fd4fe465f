"""Hyper-gradient optimization of eta = (learning rate, weight decay): the math (docs/METHOD.md, "Hyper-parameters").

theta takes the momentum-SGD step of `HyperSGD`:
    g <- clip(g, grad_clip) (global norm),  d = g + wd * theta,  v = mu * v + d,  theta' = theta - lr * v.
With g' = grad L(theta') on a training batch, the one-step hypergradients are
    dL/dlr = -<g', v>,   dL/dwd = -lr * <g', theta>,
and in log space dL/dlog_lr = lr * dL/dlr, dL/dlog_wd = wd * dL/dwd.
Included: the dependence of theta' on eta through this one step (lr scales v; wd
enters d). Ignored: the dependence of the previous velocity (and so of theta) on
earlier values of eta, and of the clipped g on anything but theta (clipping
happens before wd, so it does not depend on eta).

Where g' comes from is the estimator, chosen by name:
- `next_batch`: the gradient step t+1 computes anyway (read from p.grad after
  backward, before `HyperSGD.step` clips it); costs a few dot products.
- `held_in`: an extra forward/backward on a held-in training batch at theta' (the
  weights after step t, before step t+1), with every buffer of the model (BatchNorm
  running statistics) restored afterwards, and gradients taken by autograd.grad so
  p.grad is not touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dha_pipeline.choices import Estimator
from dha_pipeline.settings import choices_of

ESTIMATORS: tuple[Estimator, ...] = choices_of(Estimator)

Grads = list[torch.Tensor | None]


class HyperSGD(torch.optim.Optimizer):
    """Momentum SGD whose last step can be differentiated w.r.t. (lr, wd) in closed form.

    lr and weight_decay are read from each param group at every step, so a
    schedule or `HyperOptimizer` can set them: Python floats, or 0-dim tensors on
    the parameters' device (a learned eta stays there, so no step waits on a read
    back to the host). Nothing is copied for the
    hypergradient: v is the momentum buffer itself, and the pre-step theta is
    theta' + lr * v, which enters only through dot products. Each group remembers
    the lr and wd its last step used; each parameter remembers the step that last
    moved it, so parameters that sat out the last step (ops off the support) are
    left out of the hypergradient.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, grad_clip: float = 0.0) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or grad_clip < 0:
            raise ValueError(f"invalid HyperSGD settings lr={lr} momentum={momentum} wd={weight_decay} "
                             f"grad_clip={grad_clip}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "step_lr": None, "step_weight_decay": None, "step_count": 0})
        self.grad_clip = grad_clip

    def flat_params(self) -> list[torch.Tensor]:
        """All parameters, group by group: the order of every gradient list in this module."""
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Clip the global gradient norm (if grad_clip > 0), then one momentum step per group."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in self.flat_params() if p.grad is not None], self.grad_clip)
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            group["step_count"] += 1
            group["step_lr"], group["step_weight_decay"] = lr, wd
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            velocity = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                state["last_step"] = group["step_count"]
                velocity.append(state["momentum_buffer"])
            if isinstance(wd, torch.Tensor):
                direction = torch._foreach_add(grads, torch._foreach_mul(params, wd))
            else:
                direction = torch._foreach_add(grads, params, alpha=wd) if wd else grads
            torch._foreach_mul_(velocity, mu)
            torch._foreach_add_(velocity, direction)
            if isinstance(lr, torch.Tensor):
                torch._foreach_add_(params, torch._foreach_mul(velocity, -lr))
            else:
                torch._foreach_add_(params, velocity, alpha=-lr)
        return loss


@dataclass
class HyperDots:
    """The dot products the hypergradient needs, summed over parameters.

    Delta = theta - theta' = lr * v is the whole step (what lr scales), Gamma =
    lr * wd * theta its decay part (what wd scales), g = g'. Every field is a
    0-dim float64 tensor on the parameters' device (nothing is read back). Then
    dL/dlog_lr = -<g, Delta> and dL/dlog_wd = -<g, Gamma>.
    """

    g_delta: torch.Tensor
    g_gamma: torch.Tensor
    g_norm2: torch.Tensor
    delta_norm2: torch.Tensor
    gamma_norm2: torch.Tensor


def flat_dot(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """sum_i <xs_i, ys_i> as a float64 scalar on `device`: one fused product, one concatenation, one sum."""
    if not xs:
        return torch.zeros((), dtype=torch.float64, device=device)
    products = torch._foreach_mul(list(xs), list(ys))
    return torch.cat([p.reshape(-1) for p in products]).sum(dtype=torch.float64)


@torch.no_grad()
def hyper_dots(optimizer: HyperSGD, next_grads: Sequence[torch.Tensor | None]) -> HyperDots | None:
    """The dot products of g' with the last step; None if no step was taken yet.

    `next_grads` is aligned with `optimizer.flat_params()`; None means zero. Only
    parameters moved by the last step carry Delta and Gamma; per group, with
    theta = theta' + lr * v: <g', theta> = <g', theta'> + lr <g', v> and
    |theta|^2 = |theta'|^2 + 2 lr <theta', v> + lr^2 |v|^2.
    """
    grads = list(next_grads)
    if len(grads) != len(optimizer.flat_params()):
        raise ValueError(f"{len(grads)} gradients for {len(optimizer.flat_params())} parameters")
    total: list[Any] = [0.0] * 5
    stepped, start = False, 0
    for group in optimizer.param_groups:
        pairs = list(zip(group["params"], grads[start:start + len(group["params"])]))
        start += len(group["params"])
        lr, wd = group["step_lr"], group["step_weight_decay"]
        if lr is None:
            continue
        stepped = True
        moved = [(p, g, optimizer.state[p]["momentum_buffer"]) for p, g in pairs
                 if optimizer.state[p].get("last_step") == group["step_count"]]
        theta, velocity = [p for p, _, _ in moved], [v for _, _, v in moved]
        live = [(p, g, v) for p, g, v in moved if g is not None]
        p_live, g_live, v_live = [p for p, _, _ in live], [g for _, g, _ in live], [v for _, _, v in live]
        present = [g for _, g in pairs if g is not None]
        device = group["params"][0].device
        g_v, g_p, v_v, p_p, p_v, g_g = torch.stack([  # stays on the device: no synchronization
            flat_dot(g_live, v_live, device), flat_dot(g_live, p_live, device),
            flat_dot(velocity, velocity, device), flat_dot(theta, theta, device),
            flat_dot(theta, velocity, device), flat_dot(present, present, device)]).unbind()
        g_theta = g_p + lr * g_v
        theta_theta = (p_p + 2.0 * lr * p_v + lr * lr * v_v).clamp(min=0.0)  # |theta' + lr v|^2, rounding-safe
        terms = (lr * g_v, lr * wd * g_theta, g_g, lr * lr * v_v, (lr * wd) ** 2 * theta_theta)
        total = [a + b for a, b in zip(total, terms)]
    return HyperDots(*total) if stepped else None


def hypergradient(optimizer: HyperSGD, next_grads: Sequence[torch.Tensor | None]) -> tuple[float, float]:
    """(dL/dlog_lr, dL/dlog_wd) of L(theta') through the optimizer's last step; zeros before any step.
    Read back to the host: for inspection and tests, not for the training step."""
    dots = hyper_dots(optimizer, next_grads)
    if dots is None:
        return 0.0, 0.0
    return -float(dots.g_delta), -float(dots.g_gamma)


def _cosine(dot: torch.Tensor, norm2_a: torch.Tensor, norm2_b: torch.Tensor) -> torch.Tensor:
    denominator = torch.sqrt(norm2_a * norm2_b)
    return torch.where(denominator > 0, dot / denominator, torch.zeros_like(dot))


def normalized_hypergradient_on_device(optimizer: HyperSGD, next_grads: Sequence[torch.Tensor | None]
                                       ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """-cos(g', Delta) and -cos(g', Gamma) as 0-dim tensors on the parameters' device; None before any step."""
    dots = hyper_dots(optimizer, next_grads)
    if dots is None:
        return None
    return (-_cosine(dots.g_delta, dots.g_norm2, dots.delta_norm2),
            -_cosine(dots.g_gamma, dots.g_norm2, dots.gamma_norm2))


def normalized_hypergradient(optimizer: HyperSGD, next_grads: Sequence[torch.Tensor | None]) -> tuple[float, float]:
    """The hypergradients divided by |g'| |Delta| and |g'| |Gamma|: -cos(g', Delta), -cos(g', Gamma), in [-1, 1]
    (read back to the host; the training step uses `normalized_hypergradient_on_device`)."""
    normalized = normalized_hypergradient_on_device(optimizer, next_grads)
    if normalized is None:
        return 0.0, 0.0
    return float(normalized[0]), float(normalized[1])


@dataclass
class HyperParams:
    """eta in log space, clamped to the recipe's bounds: log_lr, log_wd are 0-dim float64 tensors."""

    log_lr: torch.Tensor
    log_wd: torch.Tensor
    lr_low: float
    lr_high: float
    wd_low: float
    wd_high: float

    def __post_init__(self) -> None:
        if not 0 < self.lr_low <= self.lr_high or not 0 < self.wd_low <= self.wd_high:
            raise ValueError(f"hyper-parameter bounds must be positive and ordered: lr [{self.lr_low}, "
                             f"{self.lr_high}], wd [{self.wd_low}, {self.wd_high}]")
        self.log_lr = torch.as_tensor(self.log_lr, dtype=torch.float64).detach().clone()
        self.log_wd = torch.as_tensor(self.log_wd, dtype=torch.float64).detach().clone()
        self.clamp_()

    @classmethod
    def from_values(cls, lr: float, wd: float, lr_bounds: tuple[float, float],
                    wd_bounds: tuple[float, float]) -> HyperParams:
        """Start at (lr, wd), clamped into the bounds (wd = 0 starts at the lower bound)."""
        return cls(torch.tensor(math.log(max(lr, lr_bounds[0]))), torch.tensor(math.log(max(wd, wd_bounds[0]))),
                   lr_bounds[0], lr_bounds[1], wd_bounds[0], wd_bounds[1])

    def clamp_(self) -> None:
        """Project onto [lr_low, lr_high] x [wd_low, wd_high]."""
        self.log_lr.clamp_(math.log(self.lr_low), math.log(self.lr_high))
        self.log_wd.clamp_(math.log(self.wd_low), math.log(self.wd_high))

    def to_(self, device: torch.device) -> None:
        """Keep log_lr and log_wd on `device` (where the hyper-steps run)."""
        self.log_lr, self.log_wd = self.log_lr.to(device), self.log_wd.to(device)

    @property
    def lr_on_device(self) -> torch.Tensor:
        """exp(log_lr) clamped to the bounds, a 0-dim tensor where log_lr lives (no host read)."""
        return self.log_lr.exp().clamp(self.lr_low, self.lr_high)

    @property
    def wd_on_device(self) -> torch.Tensor:
        """exp(log_wd) clamped to the bounds, a 0-dim tensor where log_wd lives (no host read)."""
        return self.log_wd.exp().clamp(self.wd_low, self.wd_high)

    @property
    def lr(self) -> float:
        """exp(log_lr), inside the bounds even after rounding."""
        return min(max(math.exp(float(self.log_lr)), self.lr_low), self.lr_high)

    @property
    def wd(self) -> float:
        """exp(log_wd), inside the bounds even after rounding."""
        return min(max(math.exp(float(self.log_wd)), self.wd_low), self.wd_high)

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint form (tensors and floats only)."""
        return {"log_lr": self.log_lr.clone(), "log_wd": self.log_wd.clone(), "lr_low": self.lr_low,
                "lr_high": self.lr_high, "wd_low": self.wd_low, "wd_high": self.wd_high}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        self.lr_low, self.lr_high = float(state["lr_low"]), float(state["lr_high"])
        self.wd_low, self.wd_high = float(state["wd_low"]), float(state["wd_high"])
        self.log_lr = torch.as_tensor(state["log_lr"], dtype=torch.float64).clone()
        self.log_wd = torch.as_tensor(state["log_wd"], dtype=torch.float64).clone()
        self.clamp_()


def next_batch_gradients(optimizer: HyperSGD) -> Grads:
    """g' for `next_batch`: the current p.grad, read after backward of step t+1 and before its optimizer step."""
    return [p.grad for p in optimizer.flat_params()]


@contextmanager
def preserved_buffers(module: nn.Module) -> Iterator[None]:
    """Restore every buffer of `module` (BatchNorm running statistics, batch counters) on exit."""
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def held_in_gradients(module: nn.Module, optimizer: HyperSGD, closure: Callable[[], torch.Tensor]) -> Grads:
    """g' for `held_in`: gradients of `closure()` (the loss on a held-in batch at the current theta').

    The forward runs as the closure sets it up (train mode: the training loss);
    the module's buffers are restored afterwards so BatchNorm statistics are
    updated once per step only, and autograd.grad leaves p.grad untouched.
    """
    with preserved_buffers(module), torch.enable_grad():
        return optimizer_gradients(closure(), optimizer)


def optimizer_gradients(loss: torch.Tensor, optimizer: HyperSGD, retain_graph: bool = False) -> Grads:
    """Gradients of `loss` aligned with `optimizer.flat_params()` (None where a parameter is unused or
    frozen), by autograd.grad: p.grad is left untouched."""
    params = optimizer.flat_params()
    wanted = [p for p in params if p.requires_grad]
    found = torch.autograd.grad(loss, wanted, retain_graph=retain_graph, allow_unused=True)
    by_id = {id(p): g for p, g in zip(wanted, found, strict=True)}
    return [by_id.get(id(p)) for p in params]


class HyperOptimizer:
    """The update rule of eta: normalized hyper-steps on (log lr, log wd), from g' by the chosen estimator.

    Step: log_eta <- log_eta - hyper_lr * h, h = the hypergradient divided by
    |g'| times the norm of the step component eta moves (|Delta| for lr, |Gamma|
    for wd), i.e. minus the cosine between g' and that component. Why the cosine:
    it is dimensionless and bounded by 1, so `hyper_lr` is the largest change of
    log eta per step whatever the parameter count or loss scale; it is zero exactly
    at the hypergradient-descent equilibrium (successive steps orthogonal), needs
    no optimizer state, and is identical on every rank. Clamped to the bounds. It changes eta only;
    writing lr and wd into theta's optimizer is the hyper learner's job (search/hyper.py).

    `anchor` > 0 pulls log eta back toward where it started by that share of the gap per hyper-step:
    log_eta <- log_eta - hyper_lr * h - anchor * (log_eta - log_eta_start). Under a mean normalized
    hypergradient m, eta settles at log_eta_start - (hyper_lr / anchor) * m, so a small but persistent m
    (the short-horizon bias of greedy lr hypergradients, which lowers lr in every run) moves eta by a
    small factor, while a strong, consistent m can still move it by up to exp(hyper_lr / anchor).
    """

    def __init__(self, params: HyperParams, hyper_lr: float, estimator: str = "next_batch",
                 anchor: float = 0.0) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown hypergradient estimator '{estimator}'; use one of {', '.join(ESTIMATORS)}")
        if not 0.0 <= anchor <= 1.0:
            raise ValueError(f"the anchor's pull must lie in [0, 1], got {anchor}")
        self.params, self.hyper_lr, self.estimator, self.anchor = params, hyper_lr, estimator, anchor
        self.start = (params.log_lr.detach().clone(), params.log_wd.detach().clone())

    def gradients(self, optimizer: HyperSGD, module: nn.Module | None = None,
                  closure: Callable[[], torch.Tensor] | None = None) -> Grads:
        """g' by the chosen estimator; `held_in` needs the module and a held-in loss closure."""
        if self.estimator == "next_batch":
            return next_batch_gradients(optimizer)
        if module is None or closure is None:
            raise ValueError("the held_in estimator needs the module and a closure computing the held-in loss")
        return held_in_gradients(module, optimizer, closure)

    def step(self, optimizer: HyperSGD, next_grads: Sequence[torch.Tensor | None]
             ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One hyper-step of eta from g' = `next_grads`, entirely on the parameters' device; returns the
        normalized (h_lr, h_wd) as 0-dim tensors, or None before the optimizer's first step (nothing to
        differentiate yet: eta stays).

        Call between the optimizer's step t and step t+1, with g' the gradient at theta' (next_batch:
        after backward of step t+1; held_in: from a held-in batch at the same theta').
        """
        normalized = normalized_hypergradient_on_device(optimizer, next_grads)
        if normalized is None:
            return None
        h_lr, h_wd = normalized
        self.params.to_(h_lr.device)
        start_lr, start_wd = (value.to(h_lr.device) for value in self.start)
        with torch.no_grad():
            pull_lr = self.anchor * (self.params.log_lr - start_lr)
            pull_wd = self.anchor * (self.params.log_wd - start_wd)
            self.params.log_lr -= self.hyper_lr * h_lr + pull_lr
            self.params.log_wd -= self.hyper_lr * h_wd + pull_wd
        self.params.clamp_()
        return h_lr, h_wd

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint form."""
        return {"params": self.params.state_dict(), "hyper_lr": self.hyper_lr, "estimator": self.estimator,
                "anchor": self.anchor, "start": [value.clone() for value in self.start]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict` (a checkpoint written before the anchor keeps the recipe's start)."""
        self.params.load_state_dict(state["params"])
        self.hyper_lr, self.estimator = float(state["hyper_lr"]), str(state["estimator"])
        self.anchor = float(state.get("anchor", self.anchor))
        if "start" in state:
            start_lr, start_wd = state["start"]
            self.start = (torch.as_tensor(start_lr, dtype=torch.float64).clone(),
                          torch.as_tensor(start_wd, dtype=torch.float64).clone())
