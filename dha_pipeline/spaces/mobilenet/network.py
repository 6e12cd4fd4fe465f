"""The plain network of a MobileNet-space genotype: a standalone, traceable nn.Module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dha_pipeline.spaces.mobilenet.backbone import Backbone, LayerSpec, MobileSkeleton
from dha_pipeline.spaces.mobilenet.blocks import SKIP, MBConv, parse_choice
from dha_pipeline.spaces.mobilenet.genotype import MobileGenotype


@dataclass(frozen=True)
class MobileNetworkConfig:
    """Everything needed to rebuild a plain network (weights aside)."""

    backbone: Backbone
    genotype: MobileGenotype
    skip_scales: tuple[float, ...] | None = None
    """Per layer, the constant factor of a skipped layer (its searched weight, which has no BatchNorm to
    fold into); None means 1 everywhere."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"backbone": self.backbone.to_dict(), "genotype": self.genotype.to_dict(),
                "skip_scales": None if self.skip_scales is None else list(self.skip_scales)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MobileNetworkConfig:
        """Inverse of `to_dict`."""
        scales = raw.get("skip_scales")
        return cls(Backbone.from_dict(raw["backbone"]), MobileGenotype.from_dict(raw["genotype"]),
                   None if scales is None else tuple(float(s) for s in scales))


class ChosenLayer(nn.Module):
    """One layer with its choice made: an MBConv (plus the input where the layer is residual), or a skip."""

    def __init__(self, spec: LayerSpec, choice: str, skip_scale: float = 1.0) -> None:
        super().__init__()
        self.residual = spec.residual
        self.skip_scale = skip_scale
        self.block: MBConv | None = None
        if choice != SKIP:
            kernel, expansion = parse_choice(choice)
            self.block = MBConv(spec.in_channels, spec.out_channels, kernel, expansion, spec.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.block is None:
            return x if self.skip_scale == 1.0 else x * self.skip_scale
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetwork(MobileSkeleton):
    """The plain network of a genotype; `forward` gives logits, `forward_train` (logits, None)."""

    def __init__(self, config: MobileNetworkConfig) -> None:
        specs = config.backbone.layers()
        config.genotype.check(specs)
        scales = config.skip_scales or (1.0,) * len(specs)
        super().__init__(config.backbone,
                         lambda index, spec: ChosenLayer(spec, config.genotype.layers[index], scales[index]))
        self.config = config

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Logits (the space has no auxiliary head)."""
        return self.forward(x), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_layers(x, lambda _index, layer, h: layer(h))
