"""Process-group awareness for torchrun: joining the group torchrun describes, which rank this is, who
writes files, and the collectives the training loop uses (docs/ARCHITECTURE.md, "Scale").

Every function is a no-op (or the identity) for one process, so the loop has one code path. dha writes
no launcher and no communication layer: torchrun starts the processes and torch.distributed moves
the tensors (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

GROUP_TIMEOUT = timedelta(minutes=30)  # a rank that waits longer than this on a collective gives up


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


def launched_world_size() -> int:
    """The process count torchrun announced in the environment (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the process group torchrun described in the environment for the duration of the block
    (nccl for CUDA, each process on the GPU of its LOCAL_RANK; gloo otherwise). Nothing happens
    for one process or when a group is already up (tests that start their own)."""
    if launched_world_size() <= 1 or _initialized():
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=GROUP_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def training_device(device: torch.device) -> torch.device:
    """The device this rank trains on: its own GPU (LOCAL_RANK) when CUDA runs several processes."""
    if device.type == "cuda" and device.index is None and _initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    """Wait for every rank (nothing for one process)."""
    if world_size() > 1:
        dist.barrier()


def all_average(tensors: Iterable[torch.Tensor | None]) -> None:
    """Replace each tensor, in place, by its mean over all ranks (None entries are skipped); nothing
    happens for one process. This is the gradient-reduction seam of the training step.

    Every rank must pass the same tensors, present or None alike, in the same order: the architecture
    support is identical on every rank, so the same ops ran and have gradients everywhere. Tensors are
    reduced in one flat buffer per dtype (one collective, not one per parameter).
    """
    present = [tensor for tensor in tensors if tensor is not None]
    if world_size() == 1 or not present:
        return
    _all_reduce_flat(present)
    torch._foreach_div_(present, float(world_size()))


def all_sum(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its sum over all ranks (nothing for one process)."""
    if world_size() > 1 and tensors:
        _all_reduce_flat(tensors)


def _all_reduce_flat(tensors: list[torch.Tensor]) -> None:
    """SUM-reduce `tensors` in place, one flat buffer per (dtype, device)."""
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device), []).append(tensor)
    for group in groups.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for tensor, reduced in zip(group, flat.split([tensor.numel() for tensor in group]), strict=True):
            tensor.copy_(reduced.view_as(tensor))


def average_buffers(module: nn.Module) -> None:
    """Make the floating-point buffers (BatchNorm running statistics) the mean over ranks, so every rank
    validates, checkpoints and exports the same network (theta itself stays identical by construction)."""
    all_average(buffer for buffer in module.buffers() if buffer.is_floating_point())


def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (the start of a run, a rebuilt network)."""
    if world_size() == 1:
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=0)


def agreed_float(value: float) -> float:
    """Rank 0's `value` on every rank: for host-side quantities (wall-clock time) that must not differ."""
    if world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return float(holder[0])


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank ([value] for one process)."""
    if world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def rank_seed(seed: int, process: int) -> int:
    """The seed of one rank's own random stream (augmentation, DA pairs, held-in batches): distinct per
    rank, and a pure function of the recipe's seed so runs reproduce."""
    return seed + 1_000_003 * (process + 1)
