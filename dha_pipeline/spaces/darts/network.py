"""The DARTS cell-space network built from a genotype: a plain, traceable nn.Module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dha_pipeline.spaces.base import resolve_stem
from dha_pipeline.spaces.darts.genotype import Genotype
from dha_pipeline.spaces.darts.operations import OPS, FactorizedReduce, ReLUConvBN

STEM_MULTIPLIER = 3


@dataclass(frozen=True)
class NetworkConfig:
    """Everything needed to rebuild a network (weights aside)."""

    num_classes: int
    in_channels: int
    image_size: int
    init_channels: int
    layers: int
    genotype: Genotype
    stem: str = "small"
    auxiliary: bool = False
    drop_path: float = 0.0
    identity_scales: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    """Per genotype edge (normal, reduce): a constant factor for stride-1 skip edges, where a
    searched op weight cannot be folded into a BatchNorm. None means 1 everywhere."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "genotype": self.genotype.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NetworkConfig:
        """Inverse of `to_dict`."""
        scales = raw.get("identity_scales")
        return cls(**{**raw, "genotype": Genotype.from_dict(raw["genotype"]),
                      "identity_scales": None if scales is None else tuple(tuple(map(float, s)) for s in scales)})


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability `drop_prob`, rescaling the rest."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class Cell(nn.Module):
    """One normal or reduction cell: 4 intermediate nodes, two edges each."""

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, channels: int,
                 reduction: bool, reduction_prev: bool, identity_scales: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(c_prev_prev, channels) if reduction_prev
                            else ReLUConvBN(c_prev_prev, channels, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, channels, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.inputs = [source for _, source in edges]
        self.ops = nn.ModuleList(OPS[op](channels, 2 if reduction and source < 2 else 1, True)
                                 for op, source in edges)
        self.is_identity = [isinstance(op, nn.Identity) for op in self.ops]
        self.scales = list(identity_scales or [1.0] * len(self.ops))
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = None
            for edge in (2 * node, 2 * node + 1):
                h = self.ops[edge](states[self.inputs[edge]])
                if self.scales[edge] != 1.0:
                    h = h * self.scales[edge]
                if self.training and drop_prob > 0 and not self.is_identity[edge]:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier after the second reduction (training only)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def build_stems(kind: str, in_channels: int, channels: int) -> tuple[nn.Module, nn.Module]:
    """(stem0, stem1): the first cell reads stem0(x) and stem1(stem0(x)).

    Small inputs: one stride-1 conv, stem1 the identity. Large inputs (ImageNet):
    stem0 downsamples 4x, stem1 2x more, as in DARTS' ImageNet network.
    """
    if kind == "small":
        stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        return stem, nn.Identity()
    stem0 = nn.Sequential(
        nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels // 2),
        nn.ReLU(inplace=True), nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(channels))
    stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(channels))
    return stem0, stem1


CellFactory = Callable[[int, int, int, bool, bool], nn.Module]
"""(c_prev_prev, c_prev, channels, reduction, reduction_prev) -> a cell with a `multiplier` attribute."""
CellCall = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""How to run one cell on its two input states."""


class CellStack(nn.Module):
    """The macro skeleton of the cell space, shared by the plain network and the supernet:
    stems, `layers` cells (reductions at 1/3 and 2/3 depth), an optional auxiliary head after
    the second reduction, global pooling and the classifier."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, init_channels: int, layers: int,
                 stem: str, auxiliary: bool, drop_path: float, make_cell: CellFactory) -> None:
        super().__init__()
        stem_kind = resolve_stem(stem, image_size)
        c = init_channels
        c_stem = STEM_MULTIPLIER * c if stem_kind == "small" else c
        self.stem0, self.stem1 = build_stems(stem_kind, in_channels, c_stem)
        c_prev_prev, c_prev, c_curr = c_stem, c_stem, c
        self.cells = nn.ModuleList()
        reduction_prev = stem_kind == "large"
        reductions = {layers // 3, 2 * layers // 3}
        self.aux_position = 2 * layers // 3
        self.auxiliary_head: nn.Module | None = None
        for index in range(layers):
            reduction = index in reductions
            if reduction:
                c_curr *= 2
            cell = make_cell(c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if auxiliary and index == self.aux_position:
                self.auxiliary_head = AuxiliaryHead(c_prev, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.drop_prob = drop_path

    def run_cells(self, x: torch.Tensor, call: CellCall) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, when the auxiliary head exists and the net trains, auxiliary logits."""
        s0 = self.stem0(x)
        s1 = self.stem1(s0)
        aux = None
        for index, cell in enumerate(self.cells):
            s0, s1 = s1, call(cell, s0, s1)
            if index == self.aux_position and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pooling(s1).flatten(1)), aux


class DartsNetwork(CellStack):
    """The plain network of a genotype.

    `forward` returns logits only (what is exported); `forward_train` also
    returns the auxiliary logits when the head exists.
    """

    def __init__(self, config: NetworkConfig) -> None:
        def make_cell(c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool) -> Cell:
            scales = None if config.identity_scales is None else config.identity_scales[int(reduction)]
            return Cell(config.genotype, c_prev_prev, c_prev, channels, reduction, reduction_prev, scales)

        super().__init__(config.num_classes, config.in_channels, config.image_size, config.init_channels,
                         config.layers, config.stem, config.auxiliary, config.drop_path, make_cell)
        self.config = config

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, when the auxiliary head exists and the net trains, auxiliary logits."""
        return self.run_cells(x, lambda cell, s0, s1: cell(s0, s1, self.drop_prob))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_train(x)[0]
