"""A rank's random streams in checkpoints: its own generator and torch's global ones (drop-path masks, and
CUDA's when present). RNG states travel as CPU byte tensors whatever device loaded the checkpoint."""

from __future__ import annotations

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
