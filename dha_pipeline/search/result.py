"""SearchResult: what search hands to derive (docs/ARCHITECTURE.md, "Contracts between stages").

It holds the trained network (its space, kind, config and weights, plus the architecture weights of
a supernet), what was learned (genotype, eta, policy summary) and what export needs to know about
the data. It is written once, at the end of a search, to its own file; the resume checkpoint is a
different file that derive never reads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from dha_pipeline.errors import DhaError
from dha_pipeline.checkpoint import load_checkpoint, save_checkpoint
from dha_pipeline.spaces.base import ArchWeights

RESULT_FORMAT = 2


@dataclass
class SearchResult:
    """The outcome of one search."""

    name: str
    """The run's name (the recipe's `name`)."""
    space: str
    kind: str
    """'supernet' (the architecture was searched) or 'network' (a plain network was trained)."""
    network: dict[str, Any]
    """The trained network's config (`config.to_dict()`), to rebuild it through the space."""
    state_dict: dict[str, torch.Tensor]
    arch_weights: list[tuple[str, int, list[tuple[int, int, torch.Tensor]]]] | None
    """For a supernet: per decision point (group, index, [(input, op, weight), ...])."""
    genotype: dict[str, Any]
    hyperparameters: dict[str, Any]
    """eta (base lr, weight decay), whether it was learned, and the schedule."""
    da_policy: dict[str, float] | None
    base_augment: dict[str, Any]
    components: list[str]
    mode: str
    epochs: int
    final_val_top1: float | None
    classes: list[str]
    mean: list[float]
    std: list[float]
    channels: int
    image_size: int
    data: dict[str, Any]
    recipe_sha256: str

    @staticmethod
    def pack_weights(weights: ArchWeights) -> list[tuple[str, int, list[tuple[int, int, torch.Tensor]]]]:
        """Architecture weights in the result's saved form (detached, on the CPU)."""
        return [(group, index, [(int(source), int(op), w.detach().cpu().clone()) for source, op, w in active])
                for (group, index), active in weights.items()]

    def weights(self) -> ArchWeights | None:
        """The architecture weights back as the space reads them (None for a plain network)."""
        if self.arch_weights is None:
            return None
        return {(group, index): [(source, op, w) for source, op, w in active]
                for group, index, active in self.arch_weights}

    def save(self, path: Path) -> None:
        """Write atomically."""
        save_checkpoint({"format": RESULT_FORMAT, **{f.name: getattr(self, f.name) for f in fields(self)}}, path)

    @classmethod
    def load(cls, path: Path) -> SearchResult:
        """Read a result written by `save`, or one error saying how to make it."""
        if not path.is_file():
            raise DhaError(f"search result '{path}' does not exist", "run `dha search RECIPE` first")
        state = load_checkpoint(path)
        if state.get("format") != RESULT_FORMAT:
            raise DhaError(f"'{path}' is not a search result of this dha version", "rerun `dha search --force`")
        state.pop("format")
        try:
            return cls(**state)
        except TypeError:
            raise DhaError(f"'{path}' is a damaged search result", "rerun `dha search --force`") from None
