"""Process-group awareness for torchrun: which rank this is, and whether it writes files."""

from __future__ import annotations

import torch.distributed as dist


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Only rank 0 writes checkpoints, logs and plots."""
    return rank() == 0
