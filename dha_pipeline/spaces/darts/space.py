"""The cell space as a `SearchSpace`: decision points, supernet, networks, genotypes, folding, pictures."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from dha_pipeline.errors import DhaError
from dha_pipeline.spaces.base import ArchWeights, DataShape, DecisionPoint, LatencyBlock, OpCap, PointKey, Support
from dha_pipeline.spaces.darts.fold import child_from_supernet, genotype_from_supports
from dha_pipeline.spaces.darts.genotype import Genotype, known_genotype
from dha_pipeline.spaces.darts.network import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.darts.operations import PRIMITIVES
from dha_pipeline.spaces.darts.plots import cell_diagrams
from dha_pipeline.spaces.darts.settings import DartsSettings
from dha_pipeline.spaces.darts.supernet import CELL_TYPES, NODES, Supernet, SupernetConfig

FIRST_NODE = 2
"""States 0 and 1 are the cell's inputs; intermediate node i is state 2 + i and reads states 0..1+i."""
KEEP_EDGES = 2


def code_size(candidates: int) -> int:
    """The length of a node's code b for its `candidates` (inputs x ops) entries of x: half of them plus 3
    (10, 13, 17, 20 for nodes 0-3). With a fixed 7, the LASSO recovery of b = A x0, before any training,
    kept the support of x0 for only 69-92 % of the nodes (worse for later nodes), so the first recovery
    changed about a quarter of the decisions at random; at this size it keeps 99-100 %
    (bench/recovery.py, docs/BENCHMARKS.md)."""
    return candidates // 2 + 3


PARAMETER_FREE = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")
"""The candidate ops without weights, which a cap can limit in the normal cell."""


class DartsSpace:
    """The cell space as a `SearchSpace`."""

    name = "darts"
    default_genotype = "DARTS_V2"
    latency_references: tuple[str, ...] = ()

    def decision_points(self, model: DartsSettings) -> list[DecisionPoint]:
        """Normal cell nodes 0..3, then reduction cell nodes 0..3 (the same for every `[model]`)."""
        return [DecisionPoint(cell_type, node, FIRST_NODE + node, PRIMITIVES, KEEP_EDGES,
                              code_size((FIRST_NODE + node) * len(PRIMITIVES)))
                for cell_type in CELL_TYPES for node in range(NODES)]

    def supernet(self, model: DartsSettings, shape: DataShape) -> Supernet:
        """The supernet of the recipe's [model] settings."""
        return Supernet(SupernetConfig(num_classes=shape.num_classes, in_channels=shape.channels,
                                       image_size=shape.image_size, init_channels=model.init_channels,
                                       layers=model.layers, stem=model.stem, auxiliary=model.auxiliary,
                                       drop_path=model.drop_path))

    def supernet_from_config(self, config: dict[str, Any]) -> Supernet:
        """The supernet of a saved config."""
        return Supernet(SupernetConfig(**config))

    def genotype(self, supports: dict[PointKey, Support]) -> Genotype:
        """Each node's kept (input, op) pairs as a DARTS genotype."""
        return genotype_from_supports(supports)

    def supports(self, genotype: Genotype) -> dict[PointKey, Support]:
        """Each node's two (input, op) pairs in `genotype`, sorted by input."""
        supports: dict[PointKey, Support] = {}
        for cell_type in CELL_TYPES:
            edges = getattr(genotype, cell_type)
            for node in range(NODES):
                pairs = sorted((source, PRIMITIVES.index(op)) for op, source in edges[2 * node:2 * node + 2])
                if len({source for source, _ in pairs}) != KEEP_EDGES:
                    raise DhaError(f"node {node} of the {cell_type} cell reads one input twice, which the search "
                                   "cannot start from", "start from another genotype, or search.init = \"random\"")
                supports[(cell_type, node)] = pairs
        return supports

    def op_caps(self, model: DartsSettings) -> list[OpCap]:
        """At most `model.max_parameter_free` parameter-free ops (pools, skip) in the normal cell."""
        return [] if model.max_parameter_free < 0 else [OpCap("normal", PARAMETER_FREE, model.max_parameter_free)]

    def genotype_from_dict(self, raw: dict[str, Any]) -> Genotype:
        """A validated genotype from its JSON form."""
        return Genotype.from_dict(raw)

    def known_genotype(self, name: str, model: DartsSettings) -> Genotype:
        """DARTS_V1 or DARTS_V2 (cells do not depend on `[model]`)."""
        return known_genotype(name)

    def network(self, model: DartsSettings, shape: DataShape, genotype: Genotype) -> DartsNetwork:
        """The plain network of `genotype` with the recipe's [model] settings."""
        return DartsNetwork(NetworkConfig(num_classes=shape.num_classes, in_channels=shape.channels,
                                          image_size=shape.image_size, init_channels=model.init_channels,
                                          layers=model.layers, genotype=genotype, stem=model.stem,
                                          auxiliary=model.auxiliary, drop_path=model.drop_path))

    def network_from_config(self, config: dict[str, Any]) -> DartsNetwork:
        """The plain network of a saved config."""
        return DartsNetwork(NetworkConfig.from_dict(config))

    def child(self, trained: nn.Module, weights: ArchWeights | None) -> DartsNetwork:
        """Supernet: fold each active op's weight into its BatchNorm. Plain network: drop the
        auxiliary head and drop-path."""
        if isinstance(trained, Supernet):
            if weights is None:
                raise ValueError("a supernet's child needs the architecture weights")
            return child_from_supernet(trained, weights)
        config = dataclasses.replace(trained.config, auxiliary=False, drop_path=0.0)
        child = DartsNetwork(config)
        child.load_state_dict({k: v for k, v in trained.state_dict().items() if not k.startswith("auxiliary_head.")})
        return child.eval()

    def latency_blocks(self, model: DartsSettings, shape: DataShape, genotype: Genotype | None) -> list[LatencyBlock]:
        """Not available: a cell's cost depends on the whole cell, so the space has no per-block table."""
        raise DhaError("search.max_latency_ms needs a space with a latency table; the darts cell space has none",
                       "use model.space = \"mobilenet\", or budget with search.max_params / search.max_macs")

    def describe(self, genotype: Genotype) -> dict[str, str]:
        """The two cells as 'op<-input' lists."""
        return {f"{cell_type} cell": ", ".join(f"{op}<-{source}" for op, source in getattr(genotype, cell_type))
                for cell_type in CELL_TYPES}

    def plot(self, genotype: dict[str, Any], path: Path) -> None:
        """Both cells as graphs."""
        cell_diagrams(genotype, path)


SPACE = DartsSpace()
