"""Supernet -> plain child network with the searched op weights folded into BatchNorms.

An active op's output is scaled by its scalar weight w; since every op ends in
a BatchNorm, w * BN(x) = BN'(x) with gamma' = w * gamma and beta' = w * beta.
The stride-1 skip has no BatchNorm: its w becomes a constant factor in the
child's config. The child then computes exactly what the supernet computes.
"""

from __future__ import annotations

import torch
from torch import nn

from dha_pipeline.spaces.darts import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.genotype import Genotype
from dha_pipeline.spaces.operations import PRIMITIVES
from dha_pipeline.spaces.supernet import CELL_TYPES, NODES, CellArch, Supernet, op_batchnorm


def genotype_from_arch(arch: dict[str, CellArch]) -> Genotype:
    """The genotype whose edges are the active (op, input) pairs of `arch`, node by node."""
    def edges(cell_type: str) -> tuple[tuple[str, int], ...]:
        return tuple((PRIMITIVES[op], source) for node in arch[cell_type] for source, op, _ in node)

    concat = tuple(range(2, 2 + NODES))
    genotype = Genotype(edges("normal"), concat, edges("reduce"), concat)
    genotype.validate()
    return genotype


@torch.no_grad()
def _fold(child_op: nn.Module, super_op: nn.Module, weight: float) -> float:
    """Copy `super_op` into `child_op` and fold `weight` into its last BatchNorm.

    Returns the factor the child must still apply (the weight itself for an op without BN).
    """
    child_op.load_state_dict(super_op.state_dict())
    norm = op_batchnorm(child_op)
    if norm is None:
        return weight
    norm.weight.mul_(weight)
    norm.bias.mul_(weight)
    return 1.0


def child_from_supernet(supernet: Supernet, arch: dict[str, CellArch]) -> DartsNetwork:
    """The plain DARTS network that computes what `supernet` computes under `arch` (eval mode)."""
    config = supernet.config
    genotype = genotype_from_arch(arch)
    flat = {t: [(source, op, float(w)) for node in arch[t] for source, op, w in node] for t in CELL_TYPES}
    node_of = {t: [node for node, active in enumerate(arch[t]) for _ in active] for t in CELL_TYPES}
    scales = {t: [1.0] * len(flat[t]) for t in CELL_TYPES}
    child = DartsNetwork(NetworkConfig(config.num_classes, config.in_channels, config.image_size,
                                       config.init_channels, config.layers, genotype, config.stem))
    child_state = child.state_dict()
    shared = {k: v for k, v in supernet.state_dict().items()
              if k in child_state and not k.startswith("cells.") and not k.startswith("auxiliary_head.")}
    child.load_state_dict(shared, strict=False)
    for child_cell, super_cell in zip(child.cells, supernet.cells, strict=True):
        cell_type = "reduce" if super_cell.reduction else "normal"
        child_cell.preprocess0.load_state_dict(super_cell.preprocess0.state_dict())
        child_cell.preprocess1.load_state_dict(super_cell.preprocess1.state_dict())
        for position, (source, op_index, weight) in enumerate(flat[cell_type]):
            node = node_of[cell_type][position]
            scales[cell_type][position] = _fold(child_cell.ops[position], super_cell.op(node, source, op_index),
                                                weight)
    identity_scales = (tuple(scales["normal"]), tuple(scales["reduce"]))
    if any(s != 1.0 for group in identity_scales for s in group):
        final = DartsNetwork(NetworkConfig(config.num_classes, config.in_channels, config.image_size,
                                           config.init_channels, config.layers, genotype, config.stem,
                                           identity_scales=identity_scales))
        final.load_state_dict(child.state_dict())
        child = final
    return child.eval()
