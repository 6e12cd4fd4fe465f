"""Parameter and multiply-accumulate counts of a network, measured on a real forward pass."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module, *, exclude: tuple[str, ...] = ("auxiliary_head",)) -> int:
    """Trainable parameters, without the training-only auxiliary head."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(exclude))


def count_macs(model: nn.Module, in_channels: int, image_size: int) -> int:
    """Multiply-accumulates of one eval-mode forward pass of a single image (conv and linear layers)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters())
            model(torch.zeros(1, in_channels, image_size, image_size, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return int(total)
