"""The architecture learner: ISTA-NAS over a space's decision points (docs/METHOD.md, "Architecture").

`ArchitectureLearner` owns the supernet it searches, the codes (b, the fixed matrices A, the last
accepted x, the frozen flags), b's Adam optimizer, the once-per-epoch FISTA recovery with its budget
test on the real target network, freezing, switching on the BatchNorm affine parameters of a frozen
point's ops, and the end of the search phase (every point froze, or `search.search_epochs`). With NAS
off (manual mode, sequential's train phase) b is the inert `FixedArchitecture`: the plain network of a
known genotype. Either way the architecture decides which network trains and how it is called.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn

from dha_pipeline.latency import LatencyTable
from dha_pipeline.recipe import SearchConfig
from dha_pipeline.search.ista import ArchCode
from dha_pipeline.search.learner import Learner, StepContext
from dha_pipeline.search.phase import Phase
from dha_pipeline.spaces.base import ArchWeights, DataShape, Genotype, SearchSpace
from dha_pipeline.spaces.cost import count_macs, count_params
from dha_pipeline.spaces.settings import ModelSettings

FISTA_MAX_ITER = 10_000


class ChildCost(NamedTuple):
    """What a budget is tested on: the plain network of a genotype's parameters, MACs and (where the recipe
    sets a latency budget) its predicted batch-1 onnxruntime latency in milliseconds."""

    params: int
    macs: int
    latency_ms: float | None = None


Cost = Callable[[Genotype], ChildCost]
"""The cost of the plain network of a genotype."""
Logits = tuple[torch.Tensor, torch.Tensor | None]
"""A network's training output: logits and auxiliary logits (None without an auxiliary head)."""


def child_cost(space: SearchSpace, model: ModelSettings, shape: DataShape, latency: LatencyTable | None) -> Cost:
    """Parameters, MACs and (given the latency table of a latency budget) predicted latency of the plain
    network of a genotype: what a budget is tested on, and what a run reports of its child."""
    def cost(genotype: Genotype) -> ChildCost:
        network = space.network(model, shape, genotype)
        predicted = None if latency is None else latency.predict(space.latency_blocks(model, shape, genotype))
        return ChildCost(count_params(network), count_macs(network, shape.channels, shape.image_size), predicted)

    return cost


def within_budget(cost: ChildCost, settings: SearchConfig) -> bool:
    """Does a network of this cost fit every budget the recipe sets (0 = no budget)?"""
    return ((not settings.max_params or cost.params <= settings.max_params)
            and (not settings.max_macs or cost.macs <= settings.max_macs)
            and (not settings.max_latency_ms or (cost.latency_ms is not None
                                                 and cost.latency_ms <= settings.max_latency_ms)))


class ArchitectureLearner(Learner):
    """Codes b of every decision point, learned by Adam through the one-step ISTA weights, over the supernet."""

    name = "b"
    log = "arch"
    fixed = False

    def __init__(self, space: SearchSpace, model: ModelSettings, shape: DataShape, settings: SearchConfig, seed: int,
                 device: torch.device, cost: Cost) -> None:
        self.space, self.settings, self.cost = space, settings, cost
        self.network: nn.Module = space.supernet(model, shape).to(device)
        self.code = ArchCode(space.decision_points(model), seed).to(device)
        self.optimizer = torch.optim.Adam(self.code.parameters(), lr=settings.arch_lr)
        self.searching = True
        self.rows: list[dict[str, Any]] = []

    @property
    def phase(self) -> Phase:
        """SEARCH until the search phase ends, then TRAIN (b is frozen, the supernet trains on)."""
        return Phase.SEARCH if self.searching else Phase.TRAIN

    def forward(self, inputs: torch.Tensor) -> Logits:
        """The supernet's training output, running each point's active candidates at their weights."""
        return self.network.forward_train(inputs, self.weights())

    def weights(self) -> ArchWeights:
        """The active candidates of every decision point and their weights (differentiable w.r.t. b)."""
        return self.code.weights()

    def parameters(self) -> list[torch.Tensor]:
        """The codes b while searching (frozen ones have no gradient); nothing after the search phase."""
        return list(self.code.parameters()) if self.searching else []

    def zero_grad(self) -> None:
        """Drop b's gradients before a backward pass."""
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, step: StepContext | None = None) -> None:
        """While searching: one Adam step on the codes of the points that are not frozen."""
        if self.searching:
            self.optimizer.step()

    def end_of_epoch(self, network: nn.Module, epoch: int) -> None:
        """While searching: recover x from b by FISTA; adopt the proposals if their network fits the budget;
        freeze the points whose x stopped moving and let their ops' BatchNorms train; end the search phase
        when every point froze or at `search.search_epochs`."""
        self.rows = []
        if not self.searching:
            return
        settings = self.settings
        proposals = self.code.recover(settings.sparsity, max_iter=FISTA_MAX_ITER)
        accept = True
        if settings.max_params or settings.max_macs or settings.max_latency_ms:
            accept = within_budget(self.cost(self.space.genotype(self.code.supports(proposals))), settings)
        self.code.commit(proposals, accept)
        for key in self.code.update_freezing(settings.freeze_threshold):
            self.network.enable_affine(key, self.code.node(key).support)
        self.rows = [{"epoch": epoch, "group": group, "index": index, "frozen": node.is_frozen,
                      "x": json.dumps([round(float(v), 6) for v in node.x_last.detach().cpu().ravel()])}
                     for (group, index), node in self.code.nodes()]
        if self.code.all_frozen() or epoch >= settings.search_epochs:
            self.finish()

    def finish(self) -> None:
        """End of the search phase: freeze every point that still moves, at its last accepted x."""
        for key, node in self.code.nodes():
            if not node.is_frozen:
                node.freeze()
                self.network.enable_affine(key, node.support)
        self.searching = False

    def log_rows(self, epoch: int) -> list[dict[str, Any]]:
        """The epoch's arch.csv rows: x of every decision point after the recovery, and whether it froze."""
        return self.rows

    def frozen_count(self) -> tuple[int, int]:
        """(frozen points, all points)."""
        nodes = self.code.nodes()
        return sum(node.is_frozen for _, node in nodes), len(nodes)

    def genotype(self) -> Genotype:
        """The architecture of the last accepted x."""
        return self.space.genotype(self.code.supports())

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: the codes, b's optimizer, and whether the search phase goes on."""
        return {"code": self.code.state_dict(), "optimizer": self.optimizer.state_dict(), "searching": self.searching}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`; the frozen points' ops get their trainable BatchNorms back."""
        self.code.load_state_dict(state["code"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.searching = bool(state["searching"])
        for key, node in self.code.nodes():
            if node.is_frozen:
                self.network.enable_affine(key, node.support)


class FixedArchitecture(Learner):
    """b with NAS off: the plain network of one genotype, nothing searched."""

    name = "b"
    fixed = True
    phase = Phase.TRAIN

    def __init__(self, space: SearchSpace, model: ModelSettings, shape: DataShape, genotype: Genotype,
                 device: torch.device) -> None:
        self.fixed_genotype = genotype
        self.network: nn.Module = space.network(model, shape, genotype).to(device)

    def forward(self, inputs: torch.Tensor) -> Logits:
        """The plain network's training output."""
        return self.network.forward_train(inputs)

    def frozen_count(self) -> tuple[int, int]:
        """(0, 0): there are no decision points."""
        return 0, 0

    def genotype(self) -> Genotype:
        """The genotype the network was built from."""
        return self.fixed_genotype
