"""The fixed macro structure of the MobileNet space: stem, first block, searchable layers, head.

`Backbone` holds what the recipe's `[model]` settings and the data fix; `layers()` lists every
searchable layer with its channels and stride, and which choices it offers. The plain network and
the supernet are both built over `MobileSkeleton`, which runs the fixed parts around the layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dha_pipeline.spaces.base import resolve_stem
from dha_pipeline.spaces.mobilenet.settings import MobileNetSettings
from dha_pipeline.spaces.mobilenet.blocks import MBCONV_CHOICES, SKIP, ConvBNAct, MBConv, make_divisible

STEM_CHANNELS = 32
FIRST_CHANNELS = 16


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer: its input and output channels and its stride."""

    in_channels: int
    out_channels: int
    stride: int

    @property
    def residual(self) -> bool:
        """Stride 1 and equal channels: the layer adds its input back, and may be skipped."""
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def choices(self) -> tuple[str, ...]:
        """The six MBConv choices, plus skipping the layer where it has a residual."""
        return MBCONV_CHOICES + ((SKIP,) if self.residual else ())


@dataclass(frozen=True)
class Backbone:
    """Everything that shapes a network of the space except the per-layer choices."""

    num_classes: int
    in_channels: int
    image_size: int
    width_mult: float
    stage_channels: tuple[int, ...]
    stage_depths: tuple[int, ...]
    stage_strides: tuple[int, ...]
    head_channels: int
    stem: str = "auto"

    @classmethod
    def of(cls, model: MobileNetSettings, num_classes: int, in_channels: int, image_size: int) -> Backbone:
        """The backbone of the recipe's `[model]` settings for data of this shape."""
        return cls(num_classes, in_channels, image_size, float(model.width_mult), tuple(model.stage_channels),
                   tuple(model.stage_depths), tuple(model.stage_strides), int(model.head_channels), model.stem)

    @property
    def stem_stride(self) -> int:
        """2 for the ImageNet stem, 1 for the small-image stem."""
        return 2 if resolve_stem(self.stem, self.image_size) == "large" else 1

    def width(self, channels: int) -> int:
        """A channel count scaled by the width multiplier and rounded to a multiple of 8."""
        return make_divisible(channels * self.width_mult)

    def layers(self) -> list[LayerSpec]:
        """Every searchable layer in order: the first layer of a stage takes its stride."""
        specs, channels = [], self.width(FIRST_CHANNELS)
        for out, depth, stride in zip(self.stage_channels, self.stage_depths, self.stage_strides, strict=True):
            for position in range(depth):
                specs.append(LayerSpec(channels, self.width(out), stride if position == 0 else 1))
                channels = self.width(out)
        return specs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "stage_channels": list(self.stage_channels),
                "stage_depths": list(self.stage_depths), "stage_strides": list(self.stage_strides)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Backbone:
        """Inverse of `to_dict`."""
        return cls(**{**raw, **{key: tuple(raw[key]) for key in ("stage_channels", "stage_depths", "stage_strides")}})


LayerFactory = Callable[[int, LayerSpec], nn.Module]
"""(layer index, its spec) -> the module that runs that layer."""


class MobileSkeleton(nn.Module):
    """Stem (3x3 conv), a fixed inverted residual (kernel 3, expansion 1), the searchable layers, a 1x1
    conv to the head width, global pooling and the classifier."""

    def __init__(self, backbone: Backbone, make_layer: LayerFactory) -> None:
        super().__init__()
        stem_channels = backbone.width(STEM_CHANNELS)
        self.stem = ConvBNAct(backbone.in_channels, stem_channels, 3, backbone.stem_stride)
        self.first = MBConv(stem_channels, backbone.width(FIRST_CHANNELS), 3, 1, 1)
        specs = backbone.layers()
        self.layers = nn.ModuleList(make_layer(index, spec) for index, spec in enumerate(specs))
        last = specs[-1].out_channels if specs else backbone.width(FIRST_CHANNELS)
        self.head = ConvBNAct(last, backbone.head_channels, 1)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(backbone.head_channels, backbone.num_classes)

    def run_layers(self, x: torch.Tensor, call: Callable[[int, nn.Module, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Logits, with `call(index, layer, x)` running each searchable layer."""
        x = self.first(self.stem(x))
        for index, layer in enumerate(self.layers):
            x = call(index, layer, x)
        return self.classifier(self.global_pooling(self.head(x)).flatten(1))
