"""The MobileNet space as a `SearchSpace`: decision points, supernet, networks, genotypes, folding,
latency blocks, pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from dha_pipeline.spaces.base import ArchWeights, DataShape, DecisionPoint, LatencyBlock, OpCap, PointKey, Support
from dha_pipeline.spaces.mobilenet.backbone import Backbone
from dha_pipeline.spaces.mobilenet.blocks import MBCONV_CHOICES, SKIP
from dha_pipeline.spaces.mobilenet.fold import child_from_supernet, genotype_from_supports
from dha_pipeline.spaces.mobilenet.genotype import MobileGenotype, known_genotype
from dha_pipeline.spaces.mobilenet.latency import network_blocks
from dha_pipeline.spaces.mobilenet.network import MobileNetwork, MobileNetworkConfig
from dha_pipeline.spaces.mobilenet.plots import layer_boxes
from dha_pipeline.spaces.mobilenet.settings import MobileNetSettings
from dha_pipeline.spaces.mobilenet.supernet import GROUP, MobileSupernet

CODE_SIZE = 4
"""Length of each layer's code b: fewer than its 6 or 7 choices, as ISTA-NAS compresses."""
KEEP = 1


def _backbone(model: MobileNetSettings, shape: DataShape | None = None) -> Backbone:
    """The backbone of `[model]`; without a data shape, a placeholder one (layer structure only)."""
    shape = shape or DataShape(num_classes=2, channels=3, image_size=224)
    return Backbone.of(model, shape.num_classes, shape.channels, shape.image_size)


class MobileNetSpace:
    """The MobileNet space as a `SearchSpace`."""

    name = "mobilenet"
    default_genotype = "MBV2"
    latency_references = ("MBV2_E3", "MBV2", "K5_E6", "K7_E6")

    def decision_points(self, model: MobileNetSettings) -> list[DecisionPoint]:
        """One point per searchable layer, in order: one input, its choices as ops, one kept."""
        return [DecisionPoint(GROUP, index, 1, spec.choices, KEEP, CODE_SIZE)
                for index, spec in enumerate(_backbone(model).layers())]

    def supernet(self, model: MobileNetSettings, shape: DataShape) -> MobileSupernet:
        """The supernet of the recipe's [model] settings."""
        return MobileSupernet(_backbone(model, shape))

    def supernet_from_config(self, config: dict[str, Any]) -> MobileSupernet:
        """The supernet of a saved config."""
        return MobileSupernet(Backbone.from_dict(config))

    def genotype(self, supports: dict[PointKey, Support]) -> MobileGenotype:
        """Each layer's kept choice."""
        return genotype_from_supports(supports)

    def supports(self, genotype: MobileGenotype) -> dict[PointKey, Support]:
        """Each layer's one choice in `genotype` (op indices as in `genotype_from_supports`)."""
        names = MBCONV_CHOICES + (SKIP,)
        return {(GROUP, index): [(0, names.index(choice))] for index, choice in enumerate(genotype.layers)}

    def op_caps(self, model: MobileNetSettings) -> list[OpCap]:
        """None: every layer chooses on its own."""
        return []

    def genotype_from_dict(self, raw: dict[str, Any]) -> MobileGenotype:
        """A validated genotype from its JSON form."""
        return MobileGenotype.from_dict(raw)

    def known_genotype(self, name: str, model: MobileNetSettings) -> MobileGenotype:
        """MBV2 (MobileNetV2: kernel 3, expansion 6 in every layer) or another uniform architecture."""
        return known_genotype(name, _backbone(model).layers())

    def network(self, model: MobileNetSettings, shape: DataShape, genotype: MobileGenotype) -> MobileNetwork:
        """The plain network of `genotype` with the recipe's [model] settings."""
        return MobileNetwork(MobileNetworkConfig(_backbone(model, shape), genotype))

    def network_from_config(self, config: dict[str, Any]) -> MobileNetwork:
        """The plain network of a saved config."""
        return MobileNetwork(MobileNetworkConfig.from_dict(config))

    def child(self, trained: nn.Module, weights: ArchWeights | None) -> MobileNetwork:
        """Supernet: fold each kept block's weight into its last BatchNorm. Plain network: itself in eval
        mode (the space has no training-only parts)."""
        if isinstance(trained, MobileSupernet):
            if weights is None:
                raise ValueError("a supernet's child needs the architecture weights")
            return child_from_supernet(trained, weights)
        child = MobileNetwork(trained.config)
        child.load_state_dict(trained.state_dict())
        return child.eval()

    def latency_blocks(self, model: MobileNetSettings, shape: DataShape,
                       genotype: MobileGenotype | None) -> list[LatencyBlock]:
        """The separately timed blocks of `genotype`'s network, or (None) of every choice of the supernet."""
        return network_blocks(_backbone(model, shape), genotype)

    def describe(self, genotype: MobileGenotype) -> dict[str, str]:
        """The layer choices, compactly."""
        return {"layers": " ".join(genotype.layers), "skipped layers": str(genotype.count(SKIP))}

    def plot(self, genotype: dict[str, Any], path: Path) -> None:
        """One box per layer."""
        layer_boxes(genotype, path)


SPACE = MobileNetSpace()
