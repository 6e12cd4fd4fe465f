"""Atomic checkpoints of the whole training state, loaded with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_with


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write `state` (tensors, dicts, lists, numbers, strings only) atomically."""
    write_with(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code); a clear error if it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise DhaError(f"checkpoint '{path}' does not exist", "run the stage that writes it first (dha search)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DhaError(f"checkpoint '{path}' cannot be read ({type(exc).__name__})",
                       "rerun the stage with --force to rewrite it") from None
