"""Choosing the compute device."""

from __future__ import annotations

import torch

from dha_pipeline.errors import DhaError


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DhaError("device = 'cuda' but no CUDA GPU is available", "use device = 'auto' or 'cpu'")
    return torch.device(name)
