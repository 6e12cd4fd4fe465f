"""Base augmentation outside the learned policy: random crop with padding, horizontal flip, Cutout,
and optionally TrivialAugment Wide (the fixed-policy anchor, between the flip and Cutout as in
torchvision's usual CIFAR pipeline). A learned policy's ops go in the same place: the training step
runs `before_policy`, the policy, then `after_policy`.

Each function works on a whole NCHW float batch on its device, draws per-sample
parameters from an explicit `torch.Generator` (so runs are reproducible and
resumable), and uses indexing only: no per-sample Python.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.nn import functional as F

from dha_pipeline.augment.trivial import trivial_augment_wide


def _uniform_ints(n: int, high: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to the original size at a random offset per sample."""
    if padding <= 0:
        return batch
    n, c, h, w = batch.shape
    padded = F.pad(batch, (padding, padding, padding, padding))
    top = _uniform_ints(n, 2 * padding + 1, generator, batch.device)
    left = _uniform_ints(n, 2 * padding + 1, generator, batch.device)
    rows = (top[:, None] + torch.arange(h, device=batch.device))[:, None, :, None].expand(n, c, h, w + 2 * padding)
    cols = (left[:, None] + torch.arange(w, device=batch.device))[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def random_hflip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = _uniform_ints(batch.shape[0], 2, generator, batch.device).bool()
    return torch.where(flip[:, None, None, None], batch.flip(3), batch)


def cutout(batch: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a `size` x `size` square (clipped at the border) at a random centre per sample."""
    if size <= 0:
        return batch
    n, _, h, w = batch.shape
    cy = _uniform_ints(n, h, generator, batch.device)[:, None, None]
    cx = _uniform_ints(n, w, generator, batch.device)[:, None, None]
    ys = torch.arange(h, device=batch.device)[None, :, None]
    xs = torch.arange(w, device=batch.device)[None, None, :]
    half = size // 2
    inside = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    return batch * (~inside)[:, None].to(batch.dtype)


@dataclass(frozen=True)
class BaseAugment:
    """The recipe's base augmentation, recorded in the run and the model metadata."""

    crop_padding: int = 4
    hflip: bool = True
    cutout: int = 0
    trivial_augment: bool = False

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment an NCHW batch in [0, 1]."""
        return self.after_policy(self.before_policy(batch, generator), generator)

    def before_policy(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """What comes before a learned policy's ops: crop, flip and TrivialAugment Wide where it is on."""
        batch = random_crop(batch, self.crop_padding, generator)
        if self.hflip:
            batch = random_hflip(batch, generator)
        return trivial_augment_wide(batch, generator) if self.trivial_augment else batch

    def after_policy(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """What comes after them: Cutout, last, as in the usual CIFAR pipeline."""
        return cutout(batch, self.cutout, generator)

    def to_dict(self) -> dict[str, int | bool]:
        """JSON-ready form."""
        return asdict(self)
