"""The MobileNet-space supernet: every layer holds all of its choices, and only the active one runs.

A layer's decision point has one input and its choices as ops; ISTA keeps one (input, op) pair with a
scalar weight w. The layer computes x + w * MBConv(x) where it is residual, w * MBConv(x) where it is
not, and w * x for a skip. The skip keeps w (rather than being a literal zero op) so the training loss
reaches its code b: a zero op would have no gradient and, once chosen, could never be left. As in the
cell space, the BatchNorm affine parameters of a layer's blocks stay at gamma = 1, beta = 0 (w carries
the scale) until the layer freezes.
"""

from __future__ import annotations

import torch
from torch import nn

from dha_pipeline.spaces.base import ActiveOp, ArchWeights, PointKey, Support, set_affine_trainable
from dha_pipeline.spaces.mobilenet.backbone import Backbone, LayerSpec, MobileSkeleton
from dha_pipeline.spaces.mobilenet.blocks import SKIP, MBConv, parse_choice

GROUP = "layer"
"""The decision-point group of every searchable layer: ("layer", index)."""


class SearchLayer(nn.Module):
    """One layer with every choice it offers; runs the active one."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.residual = spec.residual
        self.choices = spec.choices
        self.candidates = nn.ModuleList(
            nn.Identity() if choice == SKIP else MBConv(spec.in_channels, spec.out_channels, *parse_choice(choice),
                                                        spec.stride)
            for choice in self.choices)
        set_affine_trainable(self, False)

    def forward(self, x: torch.Tensor, active: list[ActiveOp]) -> torch.Tensor:
        (_, op_index, weight), = active
        y = self.candidates[op_index](x) * weight
        return x + y if self.residual and self.choices[op_index] != SKIP else y


class MobileSupernet(MobileSkeleton):
    """The space's skeleton with search layers; the architecture is an argument of the forward pass."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__(backbone, lambda _index, spec: SearchLayer(spec))
        self.config = backbone

    def forward_train(self, x: torch.Tensor, weights: ArchWeights) -> tuple[torch.Tensor, None]:
        """Logits under the architecture weights (no auxiliary head in this space)."""
        return self.forward(x, weights), None

    def forward(self, x: torch.Tensor, weights: ArchWeights) -> torch.Tensor:
        return self.run_layers(x, lambda index, layer, h: layer(h, weights[(GROUP, index)]))

    def enable_affine(self, key: PointKey, support: Support) -> None:
        """Layer `key` froze: the BatchNorms of its kept choice start training."""
        (_, op_index), = support
        set_affine_trainable(self.layers[key[1]].candidates[op_index], True)
