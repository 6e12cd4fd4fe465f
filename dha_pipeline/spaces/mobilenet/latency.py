"""The MobileNet space cut into separately timed blocks for the latency table (dha_pipeline/latency.py):
the stem with the fixed first block, each layer's choice at its shapes, and the head with the classifier.
A skipped layer costs nothing."""

from __future__ import annotations

from torch import nn

from dha_pipeline.spaces.base import LatencyBlock
from dha_pipeline.spaces.mobilenet.backbone import FIRST_CHANNELS, STEM_CHANNELS, Backbone
from dha_pipeline.spaces.mobilenet.blocks import SKIP, ConvBNAct, MBConv
from dha_pipeline.spaces.mobilenet.genotype import MobileGenotype
from dha_pipeline.spaces.mobilenet.network import ChosenLayer


def _after(size: int, stride: int) -> int:
    """Spatial side after a padded convolution of this stride."""
    return -(-size // stride)


def network_blocks(backbone: Backbone, genotype: MobileGenotype | None) -> list[LatencyBlock]:
    """The blocks of the network of `genotype`, or (None) every block the supernet can choose from."""
    c_in, size = backbone.in_channels, backbone.image_size
    c_stem, c_first = backbone.width(STEM_CHANNELS), backbone.width(FIRST_CHANNELS)
    stride = backbone.stem_stride
    blocks = [LatencyBlock(f"mobilenet/stem/{c_in}-{c_stem}-{c_first}/s{stride}/hw{size}",
                           lambda: nn.Sequential(ConvBNAct(c_in, c_stem, 3, stride), MBConv(c_stem, c_first, 3, 1, 1)),
                           (c_in, size, size))]
    size = _after(size, stride)
    specs = backbone.layers()
    for index, spec in enumerate(specs):
        choices = spec.choices if genotype is None else (genotype.layers[index],)
        for choice in choices:
            if choice == SKIP:
                continue
            blocks.append(LatencyBlock(
                f"mobilenet/layer/{choice}/{spec.in_channels}-{spec.out_channels}/s{spec.stride}/hw{size}",
                lambda spec=spec, choice=choice: ChosenLayer(spec, choice), (spec.in_channels, size, size)))
        size = _after(size, spec.stride)
    last = specs[-1].out_channels if specs else c_first
    head, classes = backbone.head_channels, backbone.num_classes
    blocks.append(LatencyBlock(f"mobilenet/head/{last}-{head}-{classes}/hw{size}",
                               lambda: nn.Sequential(ConvBNAct(last, head, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                                                     nn.Linear(head, classes)),
                               (last, size, size)))
    return blocks
