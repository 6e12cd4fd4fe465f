"""A rank's random streams in checkpoints: its own generator and torch's global ones (drop-path masks, and
CUDA's when present). RNG states travel as CPU byte tensors whatever device loaded the checkpoint. And the
global state of one forward pass, captured to replay its draws (`RandomState`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


def stream_state(generator: torch.Generator) -> dict[str, Any]:
    """The state of `generator` and of torch's global generators."""
    state = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_streams(generator: torch.Generator, state: dict[str, Any]) -> None:
    """Set `generator` and torch's global generators back to `state`."""
    generator.set_state(state["data"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])


@dataclass(frozen=True)
class RandomState:
    """The global random state of a step's forward pass (CPU, and the device's on CUDA), to replay it."""

    cpu: torch.Tensor
    device: torch.device
    accelerator: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> RandomState:
        """The state now, before the forward pass draws its masks."""
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), device, cuda)

    @contextmanager
    def replayed(self) -> Iterator[None]:
        """Inside: the captured state; on exit the state is what it was before, so the run's own random
        stream is untouched."""
        devices = [self.device] if self.accelerator is not None else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.set_rng_state(self.cpu)
            if self.accelerator is not None:
                torch.cuda.set_rng_state(self.accelerator, self.device)
            yield
