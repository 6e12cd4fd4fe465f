"""TrivialAugment Wide over the 14 ops: torchvision's op set and widest strengths, drawn per sample, batched."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T

from dha_pipeline.augment import trivial
from dha_pipeline.augment.base import BaseAugment
from dha_pipeline.augment.ops import (MAX_ENHANCE_DELTA, MAX_MAGNITUDE, MAX_ROTATE_DEGREES, MAX_SHEAR,
                                      MAX_TRANSLATE_FRACTION, MIN_POSTERIZE_BITS, OP_NAMES)

TORCHVISION_NAMES = {"Identity": "identity", "ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x",
                     "TranslateY": "translate_y", "Rotate": "rotate", "Brightness": "brightness", "Color": "color",
                     "Contrast": "contrast", "Sharpness": "sharpness", "Posterize": "posterize",
                     "Solarize": "solarize", "AutoContrast": "auto_contrast", "Equalize": "equalize"}


def _strength(op: str, magnitude: float, side: int) -> float:
    """What our op does at `magnitude`, in torchvision's units (degrees, shear factor, pixels, enhance delta,
    bits kept, solarize threshold on 0-255)."""
    level = magnitude / MAX_MAGNITUDE
    return {"rotate": MAX_ROTATE_DEGREES * level, "shear_x": MAX_SHEAR * level, "shear_y": MAX_SHEAR * level,
            "translate_x": MAX_TRANSLATE_FRACTION * side * level, "translate_y": MAX_TRANSLATE_FRACTION * side * level,
            "brightness": MAX_ENHANCE_DELTA * level, "color": MAX_ENHANCE_DELTA * level,
            "contrast": MAX_ENHANCE_DELTA * level, "sharpness": MAX_ENHANCE_DELTA * level,
            "posterize": round(8 - (8 - MIN_POSTERIZE_BITS) * level), "solarize": 255 * (1 - level)}.get(op, 0.0)


@pytest.mark.parametrize("side", [32, 64])
def test_same_ops_and_widest_strengths_as_torchvision(side: int) -> None:
    space = T.TrivialAugmentWide()._augmentation_space(trivial.NUM_BINS)
    assert {TORCHVISION_NAMES[name] for name in space} == set(OP_NAMES)
    widest = trivial.wide_magnitudes(side, side)
    for name, (magnitudes, _) in space.items():
        if magnitudes.ndim == 0:
            continue
        ours = _strength(TORCHVISION_NAMES[name], widest[TORCHVISION_NAMES[name]], side)
        assert ours == pytest.approx(float(magnitudes[-1]), abs=1e-6), name


def test_one_op_per_sample_uniform_ops_and_bins(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls = []
    real = trivial.apply_ops

    def spy(op_names, images, op, magnitude, sign):  # type: ignore[no-untyped-def]
        calls.append((op, magnitude, sign))
        return real(op_names, images, op, magnitude, sign)

    monkeypatch.setattr(trivial, "apply_ops", spy)
    images = torch.rand(2800, 3, 8, 8)
    out = trivial.trivial_augment_wide(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    (op, magnitude, sign), = calls  # one grouped call for the whole batch
    counts = torch.bincount(op, minlength=len(OP_NAMES)).float()
    assert counts.min() > 0.7 * counts.mean()
    widest = torch.tensor([trivial.wide_magnitudes(8, 8)[name] for name in OP_NAMES])[op]
    levels = torch.where(widest > 0, magnitude / widest.clamp_min(1e-9), torch.zeros_like(magnitude))
    bins = torch.round(levels[widest > 0] * (trivial.NUM_BINS - 1))
    assert torch.allclose(levels[widest > 0] * (trivial.NUM_BINS - 1), bins, atol=1e-4)
    assert bins.min() == 0 and bins.max() == trivial.NUM_BINS - 1
    assert set(sign.tolist()) == {-1.0, 1.0}


def test_reproducible_and_part_of_the_base_augmentation() -> None:
    images = torch.rand(16, 3, 8, 8)
    first = trivial.trivial_augment_wide(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, trivial.trivial_augment_wide(images, torch.Generator().manual_seed(3)))
    plain = BaseAugment(crop_padding=0, hflip=False)
    with_ta = BaseAugment(crop_padding=0, hflip=False, trivial_augment=True)
    assert torch.equal(plain(images, torch.Generator().manual_seed(3)), images)
    assert torch.equal(with_ta(images, torch.Generator().manual_seed(3)), first)
