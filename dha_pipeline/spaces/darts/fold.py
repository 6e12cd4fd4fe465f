"""Supernet -> plain child network with the searched op weights folded into BatchNorms.

An active op's output is scaled by its scalar weight w; since every op ends in
a BatchNorm, w * BN(x) = BN'(x) with gamma' = w * gamma and beta' = w * beta.
The stride-1 skip has no BatchNorm: its w becomes a constant factor in the
child's config. The child then computes exactly what the supernet computes.
"""

from __future__ import annotations

import torch
from torch import nn

from dha_pipeline.spaces.base import ArchWeights
from dha_pipeline.spaces.darts.genotype import Genotype
from dha_pipeline.spaces.darts.network import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.darts.operations import PRIMITIVES
from dha_pipeline.spaces.darts.supernet import CELL_TYPES, NODES, Supernet, cell_archs, cell_type_of, op_batchnorm


def genotype_from_supports(supports: dict[tuple[str, int], list[tuple[int, int]]]) -> Genotype:
    """The genotype whose node (cell type, i) keeps the (input, op) pairs `supports[(cell type, i)]`."""
    def edges(cell_type: str) -> tuple[tuple[str, int], ...]:
        return tuple((PRIMITIVES[op], source) for node in range(NODES) for source, op in supports[(cell_type, node)])

    concat = tuple(range(2, 2 + NODES))
    genotype = Genotype(edges("normal"), concat, edges("reduce"), concat)
    genotype.validate()
    return genotype


@torch.no_grad()
def _fold(child_op: nn.Module, super_op: nn.Module, weight: float) -> None:
    """Copy `super_op` into `child_op` and fold `weight` into its last BatchNorm (if it has one)."""
    child_op.load_state_dict(super_op.state_dict())
    norm = op_batchnorm(child_op)
    if norm is not None:
        norm.weight.mul_(weight)
        norm.bias.mul_(weight)


def child_from_supernet(supernet: Supernet, weights: ArchWeights) -> DartsNetwork:
    """The plain DARTS network that computes what `supernet` computes under `weights` (eval mode)."""
    config = supernet.config
    arch = cell_archs(weights)
    supports = {key: [(source, op) for source, op, _ in active] for key, active in weights.items()}
    flat = {t: [(node, source, op, float(w)) for node, active in enumerate(arch[t]) for source, op, w in active]
            for t in CELL_TYPES}
    first_cell = {t: next(c for c in supernet.cells if c.reduction == (t == "reduce")) for t in CELL_TYPES}
    # an op without a BatchNorm (the stride-1 skip) keeps its weight as a constant factor in the child
    scales = tuple(tuple(w if op_batchnorm(first_cell[t].op(node, source, op)) is None else 1.0
                         for node, source, op, w in flat[t]) for t in CELL_TYPES)
    identity_scales = scales if any(s != 1.0 for group in scales for s in group) else None
    child = DartsNetwork(NetworkConfig(config.num_classes, config.in_channels, config.image_size,
                                       config.init_channels, config.layers, genotype_from_supports(supports),
                                       config.stem, identity_scales=identity_scales))
    child_state = child.state_dict()
    shared = {k: v for k, v in supernet.state_dict().items()
              if k in child_state and not k.startswith("cells.") and not k.startswith("auxiliary_head.")}
    child.load_state_dict(shared, strict=False)
    for child_cell, super_cell in zip(child.cells, supernet.cells, strict=True):
        cell_type = cell_type_of(super_cell)
        child_cell.preprocess0.load_state_dict(super_cell.preprocess0.state_dict())
        child_cell.preprocess1.load_state_dict(super_cell.preprocess1.state_dict())
        for position, (node, source, op_index, weight) in enumerate(flat[cell_type]):
            _fold(child_cell.ops[position], super_cell.op(node, source, op_index), weight)
    return child.eval()
