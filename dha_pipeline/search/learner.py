"""The protocol every learner of the loop follows (docs/ARCHITECTURE.md, "Learners").

eta (search/hyper.py), tau (search/policy.py), p (search/fraction.py) and b (search/architecture.py)
are `Learner`s: the loop zeroes, steps, checkpoints, logs and fingerprints them in one loop over the
four, without knowing which is which. A component that is switched off is an inert learner (the
default hooks below do nothing), never `None`. A step calls, in this order: `start_step` (before
anything of the step runs), `zero_grad`, then (after the forward pass) `before_backward`, then (after
the backward pass and the gradient reduction) `step`, then, after theta's step, `after_theta_step`.
Each epoch ends with `end_of_epoch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dha_pipeline.search.hpo import HyperSGD


@dataclass(frozen=True)
class StepContext:
    """What one training step offers its learners."""

    index: int
    """The step's index in the whole run (epoch * steps per epoch + step in epoch)."""
    theta: HyperSGD
    network: nn.Module
    elapsed: float
    """Seconds the run has trained so far (a minutes budget moves the schedule on)."""
    per_sample_loss: torch.Tensor
    """The training loss of every sample of this rank's batch (with graph)."""
    held_in_loss: Callable[[], torch.Tensor]
    """The loss at the current weights on a random base-augmented training batch."""
    clean_loss: Callable[[str], torch.Tensor]
    """The loss at the current weights on a random un-augmented batch of a split ('val' or 'train')."""
    replay_loss: Callable[[], torch.Tensor]
    """The per-sample losses of this step's batch at the current weights, its random draws (drop-path)
    replayed, without gradients, BatchNorm statistics untouched; only in a step some learner `replays`."""


class Learner:
    """A learned (or, as this base, inert) part of the search besides theta: every hook does nothing."""

    name = ""
    """The paper's symbol: checkpoint key and replica fingerprint name."""
    log: str | None = None
    """The per-epoch search log (search/<log>.csv) its rows go to; learners that share one share its rows."""

    def parameters(self) -> list[torch.Tensor]:
        """What the training backward pass gives gradients to (reduced over ranks with theta's)."""
        return []

    def start_step(self, index: int) -> None:
        """Before the step of index `index` (in the whole run) draws or computes anything."""

    def replays(self, index: int) -> bool:
        """Does this learner call `StepContext.replay_loss` in step `index`? (Only then is the step's random
        state captured.)"""
        return False

    def zero_grad(self) -> None:
        """Drop the gradients of `parameters()` before the backward pass."""

    def before_backward(self, step: StepContext) -> None:
        """After the forward pass, before the backward pass of the training objective."""

    def step(self, step: StepContext) -> None:
        """After the backward pass and the gradient reduction, before theta's step."""

    def after_theta_step(self, step: StepContext) -> None:
        """After theta's step (theta' = the new weights)."""

    def end_of_epoch(self, network: nn.Module, epoch: int) -> None:
        """After validation at the end of epoch `epoch` (1-based)."""

    def history_fields(self) -> dict[str, Any]:
        """Its columns of the epoch's history.csv row."""
        return {}

    def log_rows(self, epoch: int) -> list[dict[str, Any]]:
        """Its rows (or, sharing a log, its columns of the rows) of `log` for epoch `epoch`."""
        return []

    def report(self) -> dict[str, Any]:
        """What it adds to the run's `hyperparameters` (summary, SearchResult, model metadata)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part (also what the ranks must agree on)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
