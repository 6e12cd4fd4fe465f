"""The building blocks of the MobileNet space: conv + BatchNorm + ReLU6, and the inverted residual (MBConv).

An MBConv choice is named `k{kernel}_e{expansion}`: a 1x1 expansion to `expansion` times the input
channels, a depthwise `kernel` x `kernel` convolution (the layer's stride), and a linear 1x1 projection.
Every block ends in a BatchNorm, so a searched scalar weight on its output folds into that BatchNorm.
"""

from __future__ import annotations

import torch
from torch import nn

KERNELS = (3, 5, 7)
EXPANSIONS = (3, 6)
MBCONV_CHOICES: tuple[str, ...] = tuple(f"k{k}_e{e}" for k in KERNELS for e in EXPANSIONS)
SKIP = "skip"
"""The choice that skips a layer (ProxylessNAS' "zero" op): only where stride is 1 and channels match."""


def parse_choice(name: str) -> tuple[int, int]:
    """(kernel, expansion) of an MBConv choice name such as 'k5_e6'."""
    kernel, expansion = name.split("_")
    return int(kernel[1:]), int(expansion[1:])


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to a multiple of `divisor`, never below `divisor` nor under 90% of `value` (the
    MobileNet width rule, so that every width multiplier gives hardware-friendly channel counts)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNAct(nn.Sequential):
    """Convolution (no bias), BatchNorm, then ReLU6 unless `activation` is off."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
                 activation: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups,
                                             bias=False), nn.BatchNorm2d(out_channels)]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """The inverted residual's body (the residual sum is the layer's job): expand, depthwise, project."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [ConvBNAct(in_channels, hidden, 1)]
        layers += [ConvBNAct(hidden, hidden, kernel, stride, groups=hidden),
                   ConvBNAct(hidden, out_channels, 1, activation=False)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def last_batchnorm(self) -> nn.BatchNorm2d:
        """The BatchNorm the block ends in (where a searched weight folds)."""
        return self.body[-1][1]
