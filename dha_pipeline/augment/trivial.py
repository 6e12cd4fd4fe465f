"""TrivialAugment Wide over the 14 ops: the fixed policy users would pick instead of a learned one.

torchvision's `TrivialAugmentWide` draws, per image, one op uniformly out of the same 14 ops the
learned policy uses, a magnitude bin uniformly out of 31 (0 to the op's widest strength) and, for
signed ops, a random sign. Here the draw is the same, but per sample of a whole batch on its device,
and applied through the policy's grouped `apply_ops` (each op once per batch, all warps in one call).
The widest strengths are torchvision's "wide" ones, written in the ops' magnitude units (m = 10 is
the learned policy's strongest level; TA Wide goes beyond it):
- rotate 135 degrees (m = 45), shear 0.99 (m = 33), translate 32 pixels (m = 320 / (0.45 * side)),
- color, contrast, brightness, sharpness: factor 1 +- 0.99 (m = 11),
- posterize down to 2 bits (m = 15), solarize threshold down to 0 (m = 10),
- identity, auto_contrast, equalize: no magnitude.
"""

from __future__ import annotations

import torch

from dha_pipeline.augment.ops import (MAX_ENHANCE_DELTA, MAX_MAGNITUDE, MAX_ROTATE_DEGREES, MAX_SHEAR,
                                      MAX_TRANSLATE_FRACTION, MIN_POSTERIZE_BITS, OP_NAMES)
from dha_pipeline.augment.policy import apply_ops

NUM_BINS = 31
WIDE_ROTATE_DEGREES = 135.0
WIDE_SHEAR = 0.99
WIDE_TRANSLATE_PIXELS = 32.0
WIDE_ENHANCE_DELTA = 0.99
WIDE_POSTERIZE_BITS = 2


def wide_magnitudes(height: int, width: int) -> dict[str, float]:
    """Each op's widest TA Wide strength in the ops' magnitude units, for images of this size."""
    enhance = WIDE_ENHANCE_DELTA / MAX_ENHANCE_DELTA * MAX_MAGNITUDE
    return {
        "identity": 0.0, "auto_contrast": 0.0, "equalize": 0.0,
        "rotate": WIDE_ROTATE_DEGREES / MAX_ROTATE_DEGREES * MAX_MAGNITUDE,
        "posterize": (8 - WIDE_POSTERIZE_BITS) / (8 - MIN_POSTERIZE_BITS) * MAX_MAGNITUDE,
        "solarize": MAX_MAGNITUDE,
        "color": enhance, "contrast": enhance, "brightness": enhance, "sharpness": enhance,
        "shear_x": WIDE_SHEAR / MAX_SHEAR * MAX_MAGNITUDE, "shear_y": WIDE_SHEAR / MAX_SHEAR * MAX_MAGNITUDE,
        "translate_x": WIDE_TRANSLATE_PIXELS / (MAX_TRANSLATE_FRACTION * width) * MAX_MAGNITUDE,
        "translate_y": WIDE_TRANSLATE_PIXELS / (MAX_TRANSLATE_FRACTION * height) * MAX_MAGNITUDE,
    }


def trivial_augment_wide(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One TA Wide draw per sample of an NCHW batch in [0, 1]; all randomness from `generator`."""
    n, _, height, width = images.shape
    draw = {"generator": generator, "device": generator.device}
    op = torch.randint(0, len(OP_NAMES), (n,), **draw)
    level = torch.randint(0, NUM_BINS, (n,), **draw).float() / (NUM_BINS - 1)
    sign = torch.randint(0, 2, (n,), **draw).float() * 2 - 1
    widest = wide_magnitudes(height, width)
    top = torch.tensor([widest[name] for name in OP_NAMES], device=generator.device)
    return apply_ops(OP_NAMES, images, op.to(images.device), (level * top[op]).to(images.device),
                     sign.to(images.device))
