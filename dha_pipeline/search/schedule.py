"""The learning-rate schedule: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

from dha_pipeline.recipe import TrainConfig


def schedule_factor(config: TrainConfig, progress_steps: float, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate after `progress_steps` steps: warm-up, then cosine to lr_min/lr."""
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    if progress_steps < warmup:
        return (progress_steps + 1) / warmup
    progress = (progress_steps - warmup) / max(total - warmup, 1)
    floor = config.lr_min / config.lr
    return floor + 0.5 * (1.0 - floor) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The scheduled learning rate at `step` (base lr `config.lr`)."""
    return config.lr * schedule_factor(config, step, steps_per_epoch)
