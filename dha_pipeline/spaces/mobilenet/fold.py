"""MobileNet supernet -> plain child network, with each layer's searched weight folded in.

A kept MBConv's output is scaled by its weight w, and the block ends in a BatchNorm, so
w * BN(x) = BN'(x) with gamma' = w * gamma and beta' = w * beta. A kept skip computes w * x: its w
becomes the layer's constant factor in the child's config. The child then computes exactly what the
supernet computes in eval mode.
"""

from __future__ import annotations

import torch

from dha_pipeline.spaces.base import ArchWeights, PointKey, Support
from dha_pipeline.spaces.mobilenet.blocks import MBCONV_CHOICES, SKIP, MBConv
from dha_pipeline.spaces.mobilenet.genotype import MobileGenotype
from dha_pipeline.spaces.mobilenet.network import MobileNetwork, MobileNetworkConfig
from dha_pipeline.spaces.mobilenet.supernet import GROUP, MobileSupernet


def genotype_from_supports(supports: dict[PointKey, Support]) -> MobileGenotype:
    """The genotype whose layer i keeps the op of `supports[("layer", i)]`. Every layer lists the MBConv
    choices in one order and, where it may skip, 'skip' last, so an op index names the same choice in
    every layer."""
    names = MBCONV_CHOICES + (SKIP,)
    count = sum(group == GROUP for group, _ in supports)
    return MobileGenotype(tuple(names[supports[(GROUP, index)][0][1]] for index in range(count)))


@torch.no_grad()
def child_from_supernet(supernet: MobileSupernet, weights: ArchWeights) -> MobileNetwork:
    """The plain network that computes what `supernet` computes under `weights` (eval mode)."""
    kept = [weights[(GROUP, index)][0] for index in range(len(supernet.layers))]
    choices = [layer.choices[op_index] for layer, (_, op_index, _) in zip(supernet.layers, kept, strict=True)]
    scales = tuple(float(w) if choice == SKIP else 1.0 for choice, (_, _, w) in zip(choices, kept, strict=True))
    child = MobileNetwork(MobileNetworkConfig(supernet.config, MobileGenotype(tuple(choices)),
                                              scales if any(s != 1.0 for s in scales) else None))
    for name in ("stem", "first", "head", "classifier"):
        getattr(child, name).load_state_dict(getattr(supernet, name).state_dict())
    for child_layer, super_layer, (_, op_index, weight) in zip(child.layers, supernet.layers, kept, strict=True):
        if child_layer.block is None:
            continue
        block = super_layer.candidates[op_index]
        assert isinstance(block, MBConv)
        child_layer.block.load_state_dict(block.state_dict())
        norm = child_layer.block.last_batchnorm()
        norm.weight.mul_(float(weight))
        norm.bias.mul_(float(weight))
    return child.eval()
