"""What a search space supplies to the loop, derive and export (docs/ARCHITECTURE.md, "Search spaces").

A space is a set of decision points (where the architecture chooses), the supernet that holds every
candidate, the plain network of one genotype, how a support becomes a genotype, how the trained
supernet folds into its child, and the plots of a genotype. The loop, derive and export talk to a
space only through `SearchSpace`; nothing outside `spaces/` names a particular space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from dha_pipeline.spaces.settings import ModelSettings

PointKey = tuple[str, int]
"""(group, index) of a decision point, e.g. ("normal", 2): node 2 of the normal cell."""
Support = list[tuple[int, int]]
"""The (input, op) pairs a decision point keeps."""
ActiveOp = tuple[int, int, torch.Tensor]
"""(input, op, scalar weight) of one active candidate."""
ArchWeights = dict[PointKey, list[ActiveOp]]
"""Per decision point, its active candidates and their weights: what the supernet runs."""


@dataclass(frozen=True)
class DecisionPoint:
    """One place where the architecture chooses `keep` distinct inputs, one candidate op each.

    Its sparse architecture x has one entry per (input, op), `size` in all, and is compressed into a
    code b of length `code_size` (< size) by a fixed random matrix (docs/METHOD.md, "Architecture").
    """

    group: str
    index: int
    num_inputs: int
    ops: tuple[str, ...]
    keep: int
    code_size: int

    @property
    def key(self) -> PointKey:
        """(group, index)."""
        return self.group, self.index

    @property
    def size(self) -> int:
        """Length of x: inputs x candidate ops."""
        return self.num_inputs * len(self.ops)


@dataclass(frozen=True)
class OpCap:
    """At most `limit` of the ops named `ops` among the supports of the decision points of `group` (for
    example: at most 2 parameter-free ops in the normal cell), enforced where supports are chosen."""

    group: str
    ops: tuple[str, ...]
    limit: int


@dataclass(frozen=True)
class DataShape:
    """What the data fixes about a network: classes, image channels and side."""

    num_classes: int
    channels: int
    image_size: int


@dataclass(frozen=True)
class LatencyBlock:
    """One separately timed piece of a network: a key naming its kind and shapes, how to build it (fresh
    weights: latency does not depend on their values) and its input shape (channels, height, width)."""

    key: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]


LARGE_STEM_MIN_SIZE = 128
"""Inputs at least this large get the ImageNet stem (downsampling early); smaller ones the CIFAR stem."""


def resolve_stem(stem: str, image_size: int) -> str:
    """'auto' picks the ImageNet stem ('large') for large inputs, the CIFAR stem ('small') otherwise."""
    if stem != "auto":
        return stem
    return "large" if image_size >= LARGE_STEM_MIN_SIZE else "small"


def set_affine_trainable(module: nn.Module, trainable: bool) -> None:
    """Switch the affine parameters of every BatchNorm inside `module` on or off (a supernet keeps a
    candidate's at gamma = 1, beta = 0 until its decision point freezes, so its weight carries the scale)."""
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.weight.requires_grad_(trainable)
            norm.bias.requires_grad_(trainable)
            if not trainable:
                norm.weight.grad = None
                norm.bias.grad = None


class Genotype(Protocol):
    """A discrete architecture of a space; JSON-ready through `to_dict`."""

    def to_dict(self) -> dict[str, Any]: ...


class SearchSpace(Protocol):
    """Everything the pipeline needs from a search space (see the module docstring)."""

    name: str
    default_genotype: str
    """The known genotype manual mode trains when the recipe says `model.genotype = "auto"`."""
    latency_references: tuple[str, ...]
    """Known genotypes whose whole networks calibrate the latency table (empty without a latency table)."""

    def decision_points(self, model: ModelSettings) -> list[DecisionPoint]:
        """Every decision point of the supernet of the recipe's `[model]` settings, in a fixed order (the
        order of codes, seeds and logs)."""
        ...

    def supernet(self, model: ModelSettings, shape: DataShape) -> nn.Module:
        """A fresh supernet for the recipe's `[model]` settings. It has `forward_train(x, weights)`
        -> (logits, aux logits or None), `forward(x, weights)`, `enable_affine(key, support)` (a point
        froze: its ops' BatchNorm affine parameters start training) and `config.to_dict()`."""
        ...

    def supernet_from_config(self, config: dict[str, Any]) -> nn.Module:
        """The supernet of a saved `config.to_dict()`."""
        ...

    def genotype(self, supports: dict[PointKey, Support]) -> Genotype:
        """The genotype whose decision points keep `supports`."""
        ...

    def supports(self, genotype: Genotype) -> dict[PointKey, Support]:
        """Inverse of `genotype`: the (input, op) pairs every decision point keeps in `genotype` (how the
        search starts at a known design)."""
        ...

    def op_caps(self, model: ModelSettings) -> list[OpCap]:
        """Limits on how many of some ops the searched supports may keep (empty: none)."""
        ...

    def genotype_from_dict(self, raw: dict[str, Any]) -> Genotype:
        """Inverse of `Genotype.to_dict`, validated (a user error if malformed)."""
        ...

    def known_genotype(self, name: str, model: ModelSettings) -> Genotype:
        """A published, hand-designed architecture of the space (manual mode), shaped for `[model]`."""
        ...

    def network(self, model: ModelSettings, shape: DataShape, genotype: Genotype) -> nn.Module:
        """The plain trainable network of `genotype`: `forward_train(x)` -> (logits, aux or None)."""
        ...

    def network_from_config(self, config: dict[str, Any]) -> nn.Module:
        """The plain network of a saved `config.to_dict()`."""
        ...

    def child(self, trained: nn.Module, weights: ArchWeights | None) -> nn.Module:
        """The deployable child of a trained network (eval mode, computing what it computes in eval
        mode): a supernet under `weights` with each weight folded in, or a plain network without its
        training-only parts. The child has `config.to_dict()` and a logits-only `forward`."""
        ...

    def latency_blocks(self, model: ModelSettings, shape: DataShape, genotype: Genotype | None) -> list[LatencyBlock]:
        """The separately timed blocks (the latency table's entries, dha_pipeline/latency.py) of `genotype`'s
        network, or (None) of every choice of the supernet; a user error where the space has no latency table."""
        ...

    def describe(self, genotype: Genotype) -> dict[str, str]:
        """Short rows for summary tables."""
        ...

    def plot(self, genotype: dict[str, Any], path: Path) -> None:
        """A picture of the architecture (PNG)."""
        ...
