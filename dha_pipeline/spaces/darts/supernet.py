"""The DARTS cell-space supernet for one-stage ISTA-NAS: every (edge, op) exists, only the
active ones run.

Each node of a cell reads every earlier state through 7 candidate ops; the
architecture code gives, per node, a sparse set of (input, op, weight) triples
and only those ops are evaluated (single path: 2 per node), scaled by their
weight. Every op's BatchNorm affine parameters stay fixed at gamma=1, beta=0
(so the weight carries the scale) until its node freezes; then they train.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dha_pipeline.spaces.base import ActiveOp, ArchWeights, PointKey, Support, set_affine_trainable
from dha_pipeline.spaces.darts.network import CellStack, drop_path
from dha_pipeline.spaces.darts.operations import OPS, PRIMITIVES, FactorizedReduce, ReLUConvBN

NODES = 4
CELL_TYPES = ("normal", "reduce")
CellArch = list[list[ActiveOp]]
"""One list of active (input state, op index into PRIMITIVES, weight) per intermediate node."""


def cell_type_of(cell: nn.Module) -> str:
    """'reduce' for a reduction cell, else 'normal'."""
    return "reduce" if cell.reduction else "normal"


def cell_archs(weights: ArchWeights) -> dict[str, CellArch]:
    """The per-cell-type, per-node form of the architecture weights that the cells read."""
    return {cell_type: [weights[(cell_type, node)] for node in range(NODES)] for cell_type in CELL_TYPES}


@dataclass(frozen=True)
class SupernetConfig:
    """Everything needed to rebuild a supernet (weights and architecture code aside)."""

    num_classes: int
    in_channels: int
    image_size: int
    init_channels: int
    layers: int
    stem: str = "small"
    auxiliary: bool = False
    drop_path: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def op_batchnorm(op: nn.Module) -> nn.BatchNorm2d | None:
    """The BatchNorm an op ends in (None for the stride-1 identity)."""
    norms = [m for m in op.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1] if norms else None


class SearchCell(nn.Module):
    """A cell holding all 7 ops on each of its 14 edges; runs only the active ones."""

    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        self.edges = nn.ModuleList()
        for node in range(NODES):
            for source in range(2 + node):
                stride = 2 if reduction and source < 2 else 1
                ops = nn.ModuleList(OPS[name](channels, stride, True) for name in PRIMITIVES)
                for op in ops:
                    set_affine_trainable(op, False)
                self.edges.append(ops)
        self.multiplier = NODES

    @staticmethod
    def edge_index(node: int, source: int) -> int:
        """Position of the edge (node, source) in `edges`."""
        return node * (node + 3) // 2 + source

    def op(self, node: int, source: int, op_index: int) -> nn.Module:
        """The candidate op `op_index` on edge (node, source)."""
        return self.edges[self.edge_index(node, source)][op_index]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, arch: CellArch, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node, active in enumerate(arch):
            total = None
            for source, op_index, weight in active:
                op = self.op(node, source, op_index)
                h = op(states[source]) * weight
                if self.training and drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat(states[2:], dim=1)


class Supernet(CellStack):
    """The cell-space skeleton with search cells; the architecture is an argument of the forward pass."""

    def __init__(self, config: SupernetConfig) -> None:
        super().__init__(config.num_classes, config.in_channels, config.image_size, config.init_channels,
                         config.layers, config.stem, config.auxiliary, config.drop_path, SearchCell)
        self.config = config

    def forward_train(self, x: torch.Tensor, weights: ArchWeights) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (and auxiliary logits while training) under the architecture weights."""
        arch = cell_archs(weights)
        return self.run_cells(x, lambda cell, s0, s1: cell(s0, s1, arch[cell_type_of(cell)], self.drop_prob))

    def forward(self, x: torch.Tensor, weights: ArchWeights) -> torch.Tensor:
        return self.forward_train(x, weights)[0]

    def enable_affine(self, key: PointKey, support: Support) -> None:
        """Node `key` froze: let the BatchNorms of its active ops train, in every cell of its type."""
        cell_type, node = key
        for cell in self.cells:
            if cell_type_of(cell) == cell_type:
                for source, op_index in support:
                    set_affine_trainable(cell.op(node, source, op_index), True)
