"""Base augmentation: batched, per-sample, reproducible from its generator."""

from __future__ import annotations

import torch

from dha_pipeline.augment.base import BaseAugment, cutout, random_crop, random_hflip


def _batch() -> torch.Tensor:
    return torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_crop_is_a_per_sample_shift_with_zero_fill() -> None:
    batch = _batch()
    out = random_crop(batch, 2, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    assert torch.equal(random_crop(batch, 0, torch.Generator()), batch)
    for sample, original in zip(out, batch):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.equal(sample, _shift(original, dy, dx))]
        assert matches, "every crop must be an integer shift of its own image"


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(image, (2, 2, 2, 2))
    h, w = image.shape[1:]
    return padded[:, 2 + dy:2 + dy + h, 2 + dx:2 + dx + w]


def test_flip_mirrors_some_samples_only() -> None:
    batch = _batch()
    out = random_hflip(batch, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, b.flip(2)) for o, b in zip(out, batch)]
    kept = [torch.equal(o, b) for o, b in zip(out, batch)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_cutout_zeroes_a_square_per_sample() -> None:
    batch = torch.ones(8, 1, 10, 10)
    out = cutout(batch, 4, torch.Generator().manual_seed(0))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert (zeros > 0).all() and (zeros <= 16).all()
    assert torch.equal(cutout(batch, 0, torch.Generator()), batch)


def test_same_generator_seed_same_result_and_range_kept() -> None:
    augment = BaseAugment(crop_padding=2, hflip=True, cutout=3)
    first = augment(_batch(), torch.Generator().manual_seed(5))
    second = augment(_batch(), torch.Generator().manual_seed(5))
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    assert augment.to_dict() == {"crop_padding": 2, "hflip": True, "cutout": 3, "trivial_augment": False}
