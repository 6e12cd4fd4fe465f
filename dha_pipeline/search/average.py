"""The weight average: an exponential moving average (EMA) of the network's weights and BatchNorm buffers over
the training phase, once the architecture is fixed (`train.ema_epochs`; docs/METHOD.md, "Weight average").

While the search moves the architecture the average would mix different networks, so it starts with the first
step of the training phase (the whole run when the architecture is fixed from the start). Its time constant is
stated in epochs, so the same setting means the same horizon on 1,000 images or on ImageNet: the per-step decay
is exp(-1 / (ema_epochs x steps per epoch)). torch's `AveragedModel` keeps it. At the end of the run
`SearchRun.finish_average` validates it and keeps it in place of the last weights only when it is better on val.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dha_pipeline.search.learner import Learner, StepContext
from dha_pipeline.search.phase import Phase


class WeightAverage(Learner):
    """The EMA of the network, updated after every theta step of the training phase (none before)."""

    name = "ema"

    def __init__(self, network: nn.Module, ema_epochs: float, steps_per_epoch: int, phase: Any) -> None:
        self.network = network
        self.ema_epochs = ema_epochs
        self.decay = math.exp(-1.0 / (ema_epochs * steps_per_epoch))
        self.phase = phase
        """A callable: the architecture's current Phase."""
        self.average: AveragedModel | None = None

    def _new_average(self) -> AveragedModel:
        return AveragedModel(self.network, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    def after_theta_step(self, step: StepContext) -> None:
        """Fold the new weights into the average (the first training-phase step starts it at them)."""
        if self.phase() is not Phase.TRAIN:
            return
        if self.average is None:
            self.average = self._new_average()
        self.average.update_parameters(self.network)  # the first update copies: n_averaged counts the steps

    @property
    def started(self) -> bool:
        """Has the training phase begun (is there an average)?"""
        return self.average is not None

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The average as a state dict of the network (weights and buffers)."""
        if self.average is None:
            raise RuntimeError("no weight average before the training phase")
        return self.average.module.state_dict()

    def report(self) -> dict[str, Any]:
        """The setting; whether the average was kept is reported by the run (`weight_average`)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: the average (None before the training phase)."""
        return {"average": None if self.average is None else self.average.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        if state.get("average") is None:
            self.average = None
            return
        self.average = self._new_average()
        self.average.load_state_dict(state["average"])
