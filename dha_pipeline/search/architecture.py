"""The architecture learner: ISTA-NAS over a space's decision points (docs/METHOD.md, "Architecture").

`ArchitectureLearner` owns the supernet it searches, the codes (b, the fixed matrices A, the last
accepted x, the kept supports, the frozen flags), b's Adam optimizer, the warm-up (every batch trains the
current support, a share of the points redrawn uniformly, while b waits), the once-per-epoch FISTA
recovery with the choice of supports under the recipe's cost target and the space's caps
(search/selection.py) and the budget test on the real target network, freezing, switching on the
BatchNorm affine parameters of a frozen point's ops (with `search.op_affine = "always"` every op's train
from the start), and the end of the search phase
(every point froze, or `search.search_epochs` after the warm-up). With NAS off (manual mode, sequential's
train phase) b is the inert `FixedArchitecture`: the plain network of a known genotype. Either way the
architecture decides which network trains and how it is called.
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
from dha_pipeline.search.selection import SupportSelector, Target, candidate_costs
from dha_pipeline.spaces.base import (ArchWeights, DataShape, DecisionPoint, Genotype, PointKey, SearchSpace, Support,
                                      set_affine_trainable)
from dha_pipeline.spaces.cost import count_macs, count_params
from dha_pipeline.spaces.settings import ModelSettings

FISTA_MAX_ITER = 10_000
DEFAULT_BANDS = {"params": 0.05, "macs": 0.05, "latency": 0.10}
"""`search.target_band` = 0: how far under its target a child may stay, per metric (latency is noisier)."""


class ChildCost(NamedTuple):
    """What a budget is tested on: the plain network of a genotype's parameters, MACs and (where the recipe
    sets a latency budget or target) its predicted batch-1 onnxruntime latency in milliseconds."""

    params: int
    macs: int
    latency_ms: float | None = None

    def of(self, metric: str) -> float | None:
        """The cost a target of `metric` ('params', 'macs' or 'latency') is measured in."""
        return {"params": self.params, "macs": self.macs, "latency": self.latency_ms}[metric]


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


def metric_cost(space: SearchSpace, model: ModelSettings, shape: DataShape, latency: LatencyTable | None,
                metric: str) -> Callable[[Genotype], float]:
    """One cost of the plain network of a genotype, computing only what it needs (a target's metric)."""
    def cost(genotype: Genotype) -> float:
        if metric == "latency":
            if latency is None:
                raise ValueError("a latency target is measured on a latency table: pass it")
            return latency.predict(space.latency_blocks(model, shape, genotype))
        network = space.network(model, shape, genotype)
        return float(count_params(network) if metric == "params"
                     else count_macs(network, shape.channels, shape.image_size))

    return cost


def within_budget(cost: ChildCost, settings: SearchConfig) -> bool:
    """Does a network of this cost fit every budget the recipe sets (0 = no budget)?"""
    return ((not settings.max_params or cost.params <= settings.max_params)
            and (not settings.max_macs or cost.macs <= settings.max_macs)
            and (not settings.max_latency_ms or (cost.latency_ms is not None
                                                 and cost.latency_ms <= settings.max_latency_ms)))


def known_design(space: SearchSpace, model: ModelSettings) -> Genotype:
    """The known genotype of `model.genotype` (the space's default for 'auto')."""
    return space.known_genotype(space.default_genotype if model.genotype == "auto" else model.genotype, model)


def cost_target(settings: SearchConfig, space: SearchSpace, model: ModelSettings, shape: DataShape,
                latency: LatencyTable | None) -> tuple[Target, Callable[[Genotype], float]] | None:
    """The recipe's cost target (its value: `search.target_value`, or the known design's cost) and the
    function that measures it; None without a target."""
    if settings.target == "none":
        return None
    measure = metric_cost(space, model, shape, latency, settings.target)
    value = settings.target_value or measure(known_design(space, model))
    return Target(settings.target, float(value), settings.target_band or DEFAULT_BANDS[settings.target]), measure


class ArchitectureLearner(Learner):
    """Codes b of every decision point, learned by Adam through the one-step ISTA weights, over the supernet."""

    name = "b"
    log = "arch"
    fixed = False

    def __init__(self, space: SearchSpace, model: ModelSettings, shape: DataShape, settings: SearchConfig, seed: int,
                 device: torch.device, cost: Cost, latency: LatencyTable | None = None) -> None:
        self.space, self.settings, self.cost, self.seed = space, settings, cost, seed
        self.points: list[DecisionPoint] = space.decision_points(model)
        self.network: nn.Module = space.supernet(model, shape).to(device)
        if settings.op_affine == "always":
            set_affine_trainable(self.network, True)
        start = space.supports(known_design(space, model)) if settings.init == "known" else None
        self.code = ArchCode(self.points, seed, start=start).to(device)
        self.optimizer = torch.optim.Adam(self.code.parameters(), lr=settings.arch_lr)
        target = cost_target(settings, space, model, shape, latency)
        self.target = None if target is None else target[0]
        costs = None if target is None else candidate_costs(
            self.points, self.code.supports(), lambda supports: target[1](space.genotype(supports)))
        self.selector = SupportSelector(self.points, space.op_caps(model), costs, self.target)
        self.warming = settings.warmup_epochs > 0
        self.searching = True
        self.unit = torch.ones((), device=device)
        self.drawn: ArchWeights = {}
        self.rows: list[dict[str, Any]] = []

    @property
    def phase(self) -> Phase:
        """WARMUP, then SEARCH until the search phase ends, then TRAIN (b is frozen, the supernet trains on)."""
        return Phase.WARMUP if self.warming else Phase.SEARCH if self.searching else Phase.TRAIN

    def forward(self, inputs: torch.Tensor) -> Logits:
        """The supernet's training output, running each point's active candidates at their weights."""
        return self.network.forward_train(inputs, self.weights())

    def weights(self) -> ArchWeights:
        """The active candidates of every decision point and their weights (differentiable w.r.t. b); while
        warming up in training mode, the step's drawn candidates at weight 1 (the codes' start value)."""
        return self.drawn if self.warming and self.network.training else self.code.weights()

    def start_step(self, index: int) -> None:
        """While warming up: draw the step's architecture (the same on every rank, a function of the seed
        and the step index alone, so a resumed run draws the same)."""
        if self.warming:
            self.drawn = {key: [(edge, op, self.unit) for edge, op in support]
                          for key, support in self.draw(index).items()}

    def draw(self, index: int) -> dict[PointKey, Support]:
        """The supports of warm-up step `index`: each point, with probability `search.warmup_redraw`, a uniformly
        random one (`keep` distinct inputs with one op each), else the codes' current one."""
        generator = torch.Generator().manual_seed((self.seed << 32) + index)
        current = self.code.supports()
        supports = {}
        for point in self.points:  # every draw is made either way, so the stream does not depend on the coin
            redraw = float(torch.rand((), generator=generator)) < self.settings.warmup_redraw
            inputs = torch.sort(torch.randperm(point.num_inputs, generator=generator)[:point.keep]).values
            ops = torch.randint(len(point.ops), (point.keep,), generator=generator)
            supports[point.key] = list(zip(inputs.tolist(), ops.tolist())) if redraw else current[point.key]
        return supports

    def parameters(self) -> list[torch.Tensor]:
        """The codes b while searching (frozen ones have no gradient); nothing in warm-up or after the search."""
        return list(self.code.parameters()) if self.searching and not self.warming else []

    def zero_grad(self) -> None:
        """Drop b's gradients before a backward pass."""
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, step: StepContext | None = None) -> None:
        """While searching: one Adam step on the codes of the points that are not frozen."""
        if self.searching and not self.warming:
            self.optimizer.step()

    def end_of_epoch(self, network: nn.Module, epoch: int) -> None:
        """Ends the warm-up after `search.warmup_epochs`. While searching: recover x from b by FISTA; choose the
        supports (the largest |x| under the target and caps); adopt them if their network fits the budget;
        freeze the points whose x stopped moving and let their ops' BatchNorms train; end the search phase
        when every point froze or `search.search_epochs` after the warm-up."""
        self.rows = []
        if self.warming:
            self.warming = epoch < self.settings.warmup_epochs
            return
        if not self.searching:
            return
        settings = self.settings
        proposals = self.code.recover(settings.sparsity, max_iter=FISTA_MAX_ITER)
        supports = self.selector.select(proposals, self.code.supports())
        accept = True
        if settings.max_params or settings.max_macs or settings.max_latency_ms:
            accept = within_budget(self.cost(self.space.genotype(supports)), settings)
        self.code.commit(proposals, supports, accept)
        for key in self.code.update_freezing(settings.freeze_threshold):
            self.network.enable_affine(key, self.code.node(key).support)
        self.rows = [{"epoch": epoch, "group": group, "index": index, "frozen": node.is_frozen,
                      "x": json.dumps([round(float(v), 6) for v in node.x_last.detach().cpu().ravel()])}
                     for (group, index), node in self.code.nodes()]
        if self.code.all_frozen() or epoch >= settings.warmup_epochs + settings.search_epochs:
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
        """The architecture of the kept supports."""
        return self.space.genotype(self.code.supports())

    def target_report(self, cost: ChildCost) -> dict[str, Any] | None:
        """The child's cost against the recipe's target (None without one)."""
        if self.target is None:
            return None
        value = cost.of(self.target.metric)
        return {"metric": self.target.metric, "target": self.target.value, "low": self.target.low,
                "child": value, "ratio": None if value is None else value / self.target.value,
                "in_band": value is not None and self.target.holds(value)}

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: the codes, b's optimizer, and the phase (warm-up, search or not)."""
        return {"code": self.code.state_dict(), "optimizer": self.optimizer.state_dict(), "searching": self.searching,
                "warming": self.warming}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`; the frozen points' ops get their trainable BatchNorms back."""
        self.code.load_state_dict(state["code"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.searching, self.warming = bool(state["searching"]), bool(state["warming"])
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

    def target_report(self, cost: ChildCost) -> None:
        """None: a fixed network has no cost target."""
        return None

    def genotype(self) -> Genotype:
        """The genotype the network was built from."""
        return self.fixed_genotype
