"""The architecture learner: ISTA-NAS over a space's decision points (docs/METHOD.md, "Architecture").

It owns the codes (b, the fixed matrices A, the last accepted x, the frozen flags), b's Adam
optimizer, the once-per-epoch FISTA recovery with its budget test on the real target network,
freezing, and switching on the BatchNorm affine parameters of a frozen point's ops. Its checkpoint
part is `state_dict()`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from dha_pipeline.recipe import SearchConfig
from dha_pipeline.search.ista import ArchCode
from dha_pipeline.spaces.base import ArchWeights, DecisionPoint, Genotype, SearchSpace

FISTA_MAX_ITER = 10_000


class ChildCost(NamedTuple):
    """What a budget is tested on: the plain network of a genotype's parameters, MACs and (where the recipe
    sets a latency budget) its predicted batch-1 onnxruntime latency in milliseconds."""

    params: int
    macs: int
    latency_ms: float | None = None


Cost = Callable[[Genotype], ChildCost]
"""The cost of the plain network of a genotype."""


def within_budget(cost: ChildCost, settings: SearchConfig) -> bool:
    """Does a network of this cost fit every budget the recipe sets (0 = no budget)?"""
    return ((not settings.max_params or cost.params <= settings.max_params)
            and (not settings.max_macs or cost.macs <= settings.max_macs)
            and (not settings.max_latency_ms or (cost.latency_ms is not None
                                                 and cost.latency_ms <= settings.max_latency_ms)))


class ArchitectureLearner:
    """Codes b of every decision point, learned by Adam through the one-step ISTA weights."""

    def __init__(self, space: SearchSpace, points: list[DecisionPoint], settings: SearchConfig, seed: int,
                 device: torch.device, cost: Cost) -> None:
        self.space = space
        self.settings = settings
        self.cost = cost
        self.code = ArchCode(points, seed).to(device)
        self.optimizer = torch.optim.Adam(self.code.parameters(), lr=settings.arch_lr)

    def weights(self) -> ArchWeights:
        """The active candidates of every decision point and their weights (differentiable w.r.t. b)."""
        return self.code.weights()

    def parameters(self) -> list[torch.Tensor]:
        """The codes b (frozen ones have no gradient)."""
        return list(self.code.parameters())

    def zero_grad(self) -> None:
        """Drop b's gradients before a backward pass."""
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """One Adam step on the codes of the points that are not frozen."""
        self.optimizer.step()

    def end_of_epoch(self, supernet: nn.Module, epoch: int) -> list[dict[str, Any]]:
        """Recover x from b by FISTA; adopt the proposals if their network fits the budget; freeze the
        points whose x stopped moving and let their ops' BatchNorms train. Returns the arch.csv rows."""
        settings = self.settings
        proposals = self.code.recover(settings.sparsity, max_iter=FISTA_MAX_ITER)
        accept = True
        if settings.max_params or settings.max_macs or settings.max_latency_ms:
            accept = within_budget(self.cost(self.space.genotype(self.code.supports(proposals))), settings)
        self.code.commit(proposals, accept)
        for key in self.code.update_freezing(settings.freeze_threshold):
            supernet.enable_affine(key, self.code.node(key).support)
        return [{"epoch": epoch, "group": group, "index": index, "frozen": node.is_frozen,
                 "x": json.dumps([round(float(v), 6) for v in node.x_last.detach().cpu().ravel()])}
                for (group, index), node in self.code.nodes()]

    def finish(self, supernet: nn.Module) -> None:
        """End of the search phase: freeze every point that still moves, at its last accepted x."""
        for key, node in self.code.nodes():
            if not node.is_frozen:
                node.freeze()
                supernet.enable_affine(key, node.support)

    def all_frozen(self) -> bool:
        """Has every decision point frozen?"""
        return self.code.all_frozen()

    def frozen_count(self) -> tuple[int, int]:
        """(frozen points, all points)."""
        nodes = self.code.nodes()
        return sum(node.is_frozen for _, node in nodes), len(nodes)

    def genotype(self) -> Genotype:
        """The architecture of the last accepted x."""
        return self.space.genotype(self.code.supports())

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: the codes and b's optimizer."""
        return {"code": self.code.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], supernet: nn.Module) -> None:
        """Inverse of `state_dict`; the frozen points' ops get their trainable BatchNorms back."""
        self.code.load_state_dict(state["code"])
        self.optimizer.load_state_dict(state["optimizer"])
        for key, node in self.code.nodes():
            if node.is_frozen:
                supernet.enable_affine(key, node.support)
