"""The learned policy that starts at TrivialAugment Wide (docs/METHOD.md, "Augmentation policy").

`TrivialPolicy` draws one op per sample out of the K = 14 ops (identity among them) from P = softmax(tau),
with a magnitude bin uniform over TrivialAugment Wide's 31 bins of that op's widest strength and a random
sign. tau starts at 0, so before it moves the policy is TrivialAugment Wide exactly: each op with
probability 1/K, each bin with probability 1/31. The adversarial objective, the entropy floor and the KL
term to the start are `AugmentPolicy`'s, over K choices instead of K * K pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dha_pipeline.augment.ops import OP_NAMES
from dha_pipeline.augment.policy import AugmentPolicy, PolicySample
from dha_pipeline.augment.trivial import NUM_BINS, wide_magnitudes


class TrivialPolicy(AugmentPolicy):
    """Learnable P over single ops at TrivialAugment Wide's strengths, for square images of side `image_size`."""

    def __init__(self, image_size: int, op_names: Sequence[str] = OP_NAMES, temperature: float = 2.0,
                 entropy_floor_fraction: float = 0.5, floor_weight: float = 1.0, kl_weight: float = 0.0) -> None:
        widest = wide_magnitudes(image_size, image_size)
        unknown = [name for name in op_names if name not in widest]
        if unknown:
            raise KeyError(f"ops {unknown} have no TrivialAugment Wide strength; known: {', '.join(widest)}")
        super().__init__(op_names, temperature, max(widest.values()), entropy_floor_fraction, floor_weight,
                         kl_weight)
        self.image_size = image_size
        self.register_buffer("widest", torch.tensor([widest[name] for name in self.op_names]), persistent=False)

    @property
    def num_choices(self) -> int:
        """K single ops."""
        return self.num_ops

    def choice_name(self, index: int) -> str:
        """The op's name."""
        return self.op_names[index]

    def sample(self, n: int, generator: torch.Generator) -> PolicySample:
        """Draw n ops from softmax(log P / T) (Gumbel-max), each with a uniform bin of its widest strength and
        a random sign; all randomness from `generator`, results on tau's device."""
        device = self.tau.device
        draw = {"generator": generator, "device": generator.device}
        op = self.draw_choices(n, generator)
        level = (torch.randint(0, NUM_BINS, (n,), **draw).float() / (NUM_BINS - 1)).to(device)
        sign = (torch.randint(0, 2, (n,), **draw).float() * 2 - 1).to(device)
        return PolicySample(pair=op, op1=op, magnitude1=level * self.widest[op], sign1=sign)

    def probability_grid(self) -> np.ndarray:
        """P as one row of K ops, for the heatmap."""
        return self.probs().detach().cpu().numpy().reshape(1, self.num_ops)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, {super().extra_repr()}"
