"""The hyper learner: eta = (base learning rate, weight decay) and the schedule (docs/METHOD.md,
"Hyper-parameters").

It is the only writer of lr and weight decay into theta's optimizer. eta is learned by the
one-step hypergradient when HPO is on, else fixed at the recipe's values; either way the learning
rate a step uses is eta's base lr times the schedule's factor (warm-up, then cosine). What it
reports is eta itself, with the schedule beside it. Its checkpoint part is `state_dict()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dha_pipeline.distributed import all_average
from dha_pipeline.recipe import HpoConfig, TrainConfig
from dha_pipeline.search.hpo import HyperOptimizer, HyperParams, HyperSGD
from dha_pipeline.search.learner import Learner, StepContext
from dha_pipeline.search.schedule import schedule_factor

SCHEDULE_KIND = "cosine"


class HyperLearner(Learner):
    """eta, learned (HPO) or fixed, and the lr schedule it is multiplied by."""

    name = "eta"
    log = "hparams"

    def __init__(self, train: TrainConfig, hpo: HpoConfig, *, learned: bool, steps_per_epoch: int,
                 budget_minutes: float = 0.0) -> None:
        self.train = train
        self.steps_per_epoch = steps_per_epoch
        self.budget_minutes = budget_minutes
        self.rule: HyperOptimizer | None = None
        if learned:
            params = HyperParams.from_values(train.lr, train.weight_decay, (hpo.lr_low, hpo.lr_high),
                                             (hpo.wd_low, hpo.wd_high))
            self.rule = HyperOptimizer(params, hpo.hyper_lr, hpo.estimator, hpo.anchor)
        self.factor = schedule_factor(train, 0, steps_per_epoch)

    @property
    def learned(self) -> bool:
        """True when eta follows the hypergradient."""
        return self.rule is not None

    @property
    def estimator(self) -> str | None:
        """Where g' comes from ('next_batch' or 'held_in'); None when eta is fixed."""
        return None if self.rule is None else self.rule.estimator

    @property
    def lr(self) -> float:
        """eta's base learning rate (before the schedule)."""
        return self.train.lr if self.rule is None else self.rule.params.lr

    @property
    def weight_decay(self) -> float:
        """eta's weight decay."""
        return self.train.weight_decay if self.rule is None else self.rule.params.wd

    @property
    def scheduled_lr(self) -> float:
        """The learning rate of the latest step: base lr times the schedule's factor."""
        return self.lr * self.factor

    def position(self, step: int, elapsed_seconds: float) -> int:
        """How far along the schedule a step is: its index, or further when a minutes budget runs out first."""
        if self.budget_minutes <= 0:
            return step
        total = self.train.epochs * self.steps_per_epoch
        return max(step, int(elapsed_seconds / (60 * self.budget_minutes) * total))

    def step(self, step: StepContext) -> None:
        """Before theta's step: `update` with this step's gradients (and, for `held_in`, its held-in loss)."""
        held_in = (step.network, step.held_in_loss) if self.estimator == "held_in" else None
        self.update(step.theta, step.index, step.elapsed, held_in)

    def update(self, theta: HyperSGD, step: int, elapsed_seconds: float,
               held_in: tuple[nn.Module, Callable[[], torch.Tensor]] | None = None) -> None:
        """Before theta's step `step`: a hyper-step on eta (if learned), then lr and wd into `theta`.

        g' is the gradient at theta' (the weights after the previous step): `next_batch` reads the
        gradients this step's backward left in p.grad (already reduced across ranks); `held_in` takes
        them from the (module, loss closure) of a held-in batch and reduces them itself.
        """
        if self.rule is not None:
            if self.rule.estimator == "held_in":
                if held_in is None:
                    raise ValueError("the held_in estimator needs the network and a held-in loss closure")
                grads = self.rule.gradients(theta, *held_in)
                all_average(grads)
            else:
                grads = self.rule.gradients(theta)
            self.rule.step(theta, grads)
        self.factor = schedule_factor(self.train, self.position(step, elapsed_seconds), self.steps_per_epoch)
        if self.rule is not None:  # learned eta stays on the device: the step reads nothing back
            params = self.rule.params
            params.to_(theta.flat_params()[0].device)
            lr: float | torch.Tensor = params.lr_on_device * self.factor
            weight_decay: float | torch.Tensor = params.wd_on_device
        else:
            lr, weight_decay = self.scheduled_lr, self.weight_decay
        for group in theta.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay

    def schedule(self) -> dict[str, Any]:
        """The schedule the base lr is multiplied by, and the momentum of theta's SGD."""
        train = self.train
        return {"kind": SCHEDULE_KIND, "lr_min": train.lr_min, "warmup_epochs": train.warmup_epochs,
                "epochs": train.epochs, "momentum": train.momentum}

    def report(self) -> dict[str, Any]:
        """eta as learned (or fixed), with the schedule beside it: what metadata and summaries show."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "learned": self.learned,
                "schedule": self.schedule()}

    def history_fields(self) -> dict[str, Any]:
        """eta at the end of the epoch, and the learning rate of its last step."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "scheduled_lr": self.scheduled_lr}

    def log_rows(self, epoch: int) -> list[dict[str, Any]]:
        """The epoch's hparams.csv row: eta at the end of the epoch, and the schedule's factor and lr then."""
        return [{"epoch": epoch, "lr": self.lr, "weight_decay": self.weight_decay,
                 "schedule_factor": self.factor, "scheduled_lr": self.scheduled_lr}]

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: learned eta (nothing when fixed) and the current schedule factor."""
        return {"rule": None if self.rule is None else self.rule.state_dict(), "factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        if self.rule is not None:
            self.rule.load_state_dict(state["rule"])
        self.factor = float(state["factor"])

