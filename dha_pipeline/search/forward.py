"""How the loop calls its network: channels_last, bf16 autocast, and a compiled forward for a fixed network.

The architecture learner says how the network runs (a supernet at b's weights, or a plain network);
this wraps that call in the recipe's speed settings, which change rounding only, never the result.
"""

from __future__ import annotations

import torch

from dha_pipeline.recipe import TrainConfig
from dha_pipeline.search.architecture import ArchitectureLearner, FixedArchitecture, Logits


class TrainingForward:
    """The network of `arch` called as `train` says: NHWC (`channels_last`, on CUDA with 'auto'), under bf16
    autocast (`precision`), and, for a fixed network in training mode, through `torch.compile`."""

    def __init__(self, arch: ArchitectureLearner | FixedArchitecture, train: TrainConfig,
                 device: torch.device) -> None:
        self.arch, self.device = arch, device
        self.bf16 = train.precision == "bf16"
        self.channels_last = train.channels_last == "on" or (train.channels_last == "auto" and device.type == "cuda")
        if self.channels_last:
            arch.network.to(memory_format=torch.channels_last)
        self.compiled = (torch.compile(arch.network.forward_train, mode=train.compile, dynamic=False)
                         if train.compile != "off" and arch.fixed else None)

    def __call__(self, inputs: torch.Tensor) -> Logits:
        """Logits and auxiliary logits (fp32) of the current network."""
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            compiled = self.compiled is not None and self.arch.network.training
            logits, aux = self.compiled(inputs) if compiled else self.arch.forward(inputs)
        return logits.float(), None if aux is None else aux.float()
