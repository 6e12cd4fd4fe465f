"""Stopping on a loss that is not finite, on every rank alike, without a host read per step."""

from __future__ import annotations

from pathlib import Path

import torch

from dha_pipeline.errors import DhaError


class NonFiniteWatch:
    """The first step whose loss was not finite on some rank, kept on the device (the flag of a step is reduced
    over ranks with the gradients, so every rank holds the same step)."""

    def __init__(self, device: torch.device) -> None:
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    def note(self, bad: torch.Tensor, step: int) -> None:
        """Remember `step` if `bad` (> 0: some rank's loss was not finite) and no earlier step was bad."""
        self.first_bad_step = torch.where((bad > 0) & (self.first_bad_step < 0), step, self.first_bad_step)

    def check(self, steps_per_epoch: int, checkpoint: Path) -> None:
        """Raise one user error naming the first bad step, if there was one (a host read: call it before
        checkpoints and validation, so the last checkpoint on disk is always a good one)."""
        first_bad = int(self.first_bad_step)
        if first_bad >= 0:
            epoch, step = divmod(first_bad, steps_per_epoch)
            raise DhaError(f"training loss became non-finite at epoch {epoch + 1}, step {step + 1}; the last good "
                           f"checkpoint is kept in '{checkpoint}'",
                           "lower train.lr (or hpo.lr_high) and keep train.grad_clip > 0")
