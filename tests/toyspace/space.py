"""The toy space: stem -> one convolution whose kernel is searched (1, 3 or 5) -> pooled linear head."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dha_pipeline.errors import DhaError
from dha_pipeline.figures import pyplot, save_png
from dha_pipeline.spaces.base import ArchWeights, DataShape, DecisionPoint, PointKey, Support

KERNELS = (1, 3, 5)
POINT = ("conv", 0)


@dataclass(frozen=True)
class ToyGenotype:
    kernel: int

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel}


@dataclass(frozen=True)
class ToyConfig:
    classes: int
    channels: int
    width: int
    kernel: int = 0  # 0: the supernet (every kernel)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.stem = nn.Conv2d(config.channels, config.width, 3, padding=1)
        kernels = KERNELS if config.kernel == 0 else (config.kernel,)
        self.convs = nn.ModuleList(nn.Conv2d(config.width, config.width, k, padding=k // 2) for k in kernels)
        self.head = nn.Linear(config.width, config.classes)

    def forward_train(self, x: torch.Tensor, weights: ArchWeights | None = None) -> tuple[torch.Tensor, None]:
        x = torch.relu(self.stem(x))
        if weights is None:
            x = self.convs[0](x)
        else:
            x = sum(w * self.convs[op](x) for _, op, w in weights[POINT])
        return self.head(torch.relu(x).mean((2, 3))), None

    def forward(self, x: torch.Tensor, weights: ArchWeights | None = None) -> torch.Tensor:
        return self.forward_train(x, weights)[0]

    def enable_affine(self, key: PointKey, support: Support) -> None:
        """No BatchNorm to switch on."""


class ToySpace:
    name = "toy"
    default_genotype = "K3"
    latency_references: tuple[str, ...] = ()

    def decision_points(self, model: Any) -> list[DecisionPoint]:
        return [DecisionPoint(*POINT, num_inputs=1, ops=tuple(f"k{k}" for k in KERNELS), keep=1, code_size=2)]

    def supernet(self, model: Any, shape: DataShape) -> ToyNet:
        return ToyNet(ToyConfig(shape.num_classes, shape.channels, model.width))

    def supernet_from_config(self, config: dict[str, Any]) -> ToyNet:
        return ToyNet(ToyConfig(**config))

    def genotype(self, supports: dict[PointKey, Support]) -> ToyGenotype:
        return ToyGenotype(KERNELS[supports[POINT][0][1]])

    def supports(self, genotype: ToyGenotype) -> dict[PointKey, Support]:
        return {POINT: [(0, KERNELS.index(genotype.kernel))]}

    def op_caps(self, model: Any) -> list[Any]:
        return []

    def genotype_from_dict(self, raw: dict[str, Any]) -> ToyGenotype:
        if raw.get("kernel") not in KERNELS:
            raise DhaError(f"toy genotype {raw} has no kernel of {KERNELS}")
        return ToyGenotype(raw["kernel"])

    def known_genotype(self, name: str, model: Any) -> ToyGenotype:
        return ToyGenotype(int(name.removeprefix("K")))

    def network(self, model: Any, shape: DataShape, genotype: ToyGenotype) -> ToyNet:
        return ToyNet(ToyConfig(shape.num_classes, shape.channels, model.width, genotype.kernel))

    def network_from_config(self, config: dict[str, Any]) -> ToyNet:
        return ToyNet(ToyConfig(**config))

    @torch.no_grad()
    def child(self, trained: nn.Module, weights: ArchWeights | None) -> ToyNet:
        """The chosen convolution with its architecture weight folded into its weights and bias."""
        if weights is None:
            child = ToyNet(trained.config)
            child.load_state_dict(trained.state_dict())
            return child.eval()
        (_, op, w), = weights[POINT]
        child = ToyNet(ToyConfig(**{**trained.config.to_dict(), "kernel": KERNELS[op]}))
        child.stem.load_state_dict(trained.stem.state_dict())
        child.head.load_state_dict(trained.head.state_dict())
        child.convs[0].weight.copy_(w * trained.convs[op].weight)
        child.convs[0].bias.copy_(w * trained.convs[op].bias)
        return child.eval()

    def latency_blocks(self, model: Any, shape: DataShape, genotype: ToyGenotype | None) -> list[Any]:
        raise DhaError("the toy space has no latency table", "budget with search.max_params")

    def describe(self, genotype: ToyGenotype) -> dict[str, str]:
        return {"searched kernel": f"{genotype.kernel}x{genotype.kernel}"}

    def plot(self, genotype: dict[str, Any], path: Path) -> None:
        fig, axis = pyplot().subplots(figsize=(2, 2))
        axis.text(0.5, 0.5, f"k{genotype['kernel']}", ha="center")
        save_png(fig, path)


SPACE = ToySpace()
