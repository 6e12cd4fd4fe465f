"""Process-group awareness for torchrun: which rank this is, who writes files, and the gradient
reduction seam of the training step (docs/ARCHITECTURE.md, "Scale")."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if _initialized() else 0


def world_size() -> int:
    """Number of processes training together (1 when not distributed)."""
    return dist.get_world_size() if _initialized() else 1


def is_main_process() -> bool:
    """Only rank 0 writes checkpoints, logs and plots."""
    return rank() == 0


def all_average(tensors: Iterable[torch.Tensor | None]) -> None:
    """Replace each tensor, in place, by its mean over all ranks (None entries are skipped); nothing
    happens for one process. This is the gradient-reduction seam of the training step.

    Every rank must pass the same tensors, present or None alike, in the same order: the architecture
    support is identical on every rank, so the same ops ran and have gradients everywhere.
    """
    if world_size() == 1:
        return
    present = [tensor for tensor in tensors if tensor is not None]
    for tensor in present:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    torch._foreach_div_(present, float(world_size()))
