"""The K = 14 augmentation ops of the learned DA policy (docs/METHOD.md, "Augmentation policy"), batched over Kornia.

Every op has one signature, `op(images, magnitude, sign) -> images`: `images` is an NCHW float batch in
[0, 1], `magnitude` a per-sample tensor in [0, 10] and `sign` a per-sample tensor of +1/-1. Each sample gets
its own strength in one call, so the policy can apply an op once to all samples that drew it. Magnitudes map
monotonically to strength (PBA-style); the semantics follow PIL, the reference that torchvision's AutoAugment
uses. Conventions:
- rotate: +sign turns the content counter-clockwise as displayed (PIL `Image.rotate`), about the image centre.
- shear_x / shear_y: the sign of `torchvision.transforms.v2.functional.affine` (and PIL's affine shear):
  output(x, y) = input(x + s * y, y) for shear_x with s = sign * 0.3 * m / 10, about the top-left corner.
- translate_x / translate_y: +sign moves the content right / down (torchvision's `translate`).
- color, contrast, brightness, sharpness: +sign enhances (factor > 1), -sign attenuates (factor < 1).
Geometric ops interpolate bilinearly and fill with 0 outside the image. Unsigned ops ignore `sign`.
The registry is open: `register_op` adds ops by name (e.g. Invert, Cutout).
"""

from __future__ import annotations

from collections.abc import Callable

import kornia
import torch
from torch import nn

Op = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

MAX_MAGNITUDE = 10.0
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATE_FRACTION = 0.45
MIN_POSTERIZE_BITS = 4
MAX_ENHANCE_DELTA = 0.9
INTERPOLATION = "bilinear"


def _level(magnitude: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Magnitude as a fraction of the maximum, on the images' device and dtype."""
    return magnitude.to(device=images.device, dtype=images.dtype) / MAX_MAGNITUDE


def _signed_level(magnitude: torch.Tensor, sign: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return _level(magnitude, images) * sign.to(device=images.device, dtype=images.dtype)


def _enhance_factor(magnitude: torch.Tensor, sign: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance factor 1 + sign * 0.9 * m / 10: 1 keeps the image, > 1 enhances, < 1 attenuates."""
    return 1.0 + MAX_ENHANCE_DELTA * _signed_level(magnitude, sign, images)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def identity(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Return the batch unchanged (the same tensor): the 'no augmentation' choice of the policy."""
    return images


def auto_contrast(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to the full [0, 1] range (PIL `ImageOps.autocontrast`); magnitude-independent.

    Written in torch: `kornia.enhance.normalize_min_max` sends constant channels to 0 and adds an eps to
    the range, whereas PIL leaves a constant channel unchanged.
    """
    low = images.amin(dim=(-2, -1), keepdim=True)
    high = images.amax(dim=(-2, -1), keepdim=True)
    flat = high <= low
    scale = torch.where(flat, torch.ones_like(high), 1.0 / (high - low).clamp_min(torch.finfo(images.dtype).tiny))
    low = torch.where(flat, torch.zeros_like(low), low)
    return ((images - low) * scale).clamp(0.0, 1.0)


def equalize(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Histogram-equalize each channel on 256 levels (PIL `ImageOps.equalize`); magnitude-independent."""
    return kornia.enhance.equalize(images)


def warp(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply per-sample 2x3 forward affine matrices (pixel coordinates), bilinear, zero fill."""
    return kornia.geometry.transform.affine(images, matrix, mode=INTERPOLATION, padding_mode="zeros",
                                            align_corners=False)


def rotate_matrix(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Rotation about the image centre by sign * 30 * m / 10 degrees (what `kornia...rotate` builds)."""
    angle = MAX_ROTATE_DEGREES * _signed_level(magnitude, sign, images)
    height, width = images.shape[-2:]
    center = torch.tensor([(width - 1) / 2, (height - 1) / 2], device=images.device, dtype=images.dtype)
    center = center.expand(images.shape[0], 2)
    return kornia.geometry.transform.get_rotation_matrix2d(center, angle, torch.ones_like(center))


def rotate(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Rotate about the centre by sign * 30 * m / 10 degrees, counter-clockwise for +sign, as PIL."""
    return warp(images, rotate_matrix(images, magnitude, sign))


def posterize(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Keep round(8 - 4 * m / 10) high bits of each 8-bit level (PIL `ImageOps.posterize`); 8 bits = identity.

    Bit masks on the 8-bit levels rather than `kornia.enhance.posterize`, which is 5-6x slower on
    CPU batches here and floors levels that fall between two 8-bit values.
    """
    bits = torch.round(8.0 - (8 - MIN_POSTERIZE_BITS) * magnitude.to(images.device).float() / MAX_MAGNITUDE)
    shift = (8 - bits).to(torch.int32)
    mask = ((255 >> shift) << shift).view(-1, 1, 1, 1)
    levels = torch.round(images * 255.0).to(torch.int32)
    return (levels & mask).to(images.dtype) / 255.0


def solarize(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Invert the levels at or above 256 * (1 - m / 10) on the 0-255 scale (PIL `ImageOps.solarize`).

    The threshold starts at 256/255 > 1 in [0, 1], so m = 0 leaves even white pixels alone, as PIL's 256 does.
    """
    threshold = (256.0 / 255.0) * (1.0 - _level(magnitude, images))
    return kornia.enhance.solarize(images, threshold)


def color(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Blend with the grayscale image by the enhance factor (PIL `ImageEnhance.Color`); identity for C = 1."""
    return kornia.enhance.adjust_saturation_with_gray_subtraction(images, _enhance_factor(magnitude, sign, images))


def contrast(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Blend with the mean gray level by the enhance factor (PIL `ImageEnhance.Contrast`)."""
    return kornia.enhance.adjust_contrast_with_mean_subtraction(images, _enhance_factor(magnitude, sign, images))


def brightness(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Multiply by the enhance factor, i.e. blend with black (PIL `ImageEnhance.Brightness`).

    Not `kornia.enhance.adjust_brightness`, which adds an offset instead of scaling.
    """
    return (images * _per_sample(_enhance_factor(magnitude, sign, images))).clamp(0.0, 1.0)


def sharpness(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's 3x3 smoothed image by the enhance factor (PIL `ImageEnhance.Sharpness`)."""
    return kornia.enhance.sharpness(images, _enhance_factor(magnitude, sign, images))


def _shear_matrix(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor, axis: int) -> torch.Tensor:
    # PIL (and torchvision's AutoAugment, center=[0, 0]) fills output pixel (x, y) from input x + s * (y + 1/2)
    # in pixel-centre coordinates: an inverse map about the top-left pixel corner. `kornia.geometry.transform.shear`
    # is a forward map about the top-left pixel centre (opposite sign, half a pixel off), so the forward matrix
    # x_out = x_in - s * y_in - s / 2 is built here and warped with `kornia.geometry.transform.affine`.
    factor = MAX_SHEAR * _signed_level(magnitude, sign, images)
    matrix = torch.eye(2, 3, device=images.device, dtype=images.dtype).repeat(images.shape[0], 1, 1)
    matrix[:, axis, 1 - axis] = -factor
    matrix[:, axis, 2] = -0.5 * factor
    return matrix


def shear_x_matrix(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Horizontal shear by s = sign * 0.3 * m / 10: output(x, y) = input(x + s * y, y)."""
    return _shear_matrix(images, magnitude, sign, 0)


def shear_y_matrix(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Vertical shear by s = sign * 0.3 * m / 10: output(x, y) = input(x, y + s * x)."""
    return _shear_matrix(images, magnitude, sign, 1)


def _translate_matrix(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor, axis: int) -> torch.Tensor:
    side = images.shape[-1] if axis == 0 else images.shape[-2]
    offset = MAX_TRANSLATE_FRACTION * side * _signed_level(magnitude, sign, images)
    matrix = torch.eye(2, 3, device=images.device, dtype=images.dtype).repeat(images.shape[0], 1, 1)
    matrix[:, axis, 2] = offset
    return matrix


def translate_x_matrix(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shift by sign * 0.45 * m / 10 of the width; +sign moves the content right."""
    return _translate_matrix(images, magnitude, sign, 0)


def translate_y_matrix(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shift by sign * 0.45 * m / 10 of the height; +sign moves the content down."""
    return _translate_matrix(images, magnitude, sign, 1)


AffineMatrix = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

AFFINE_MATRICES: dict[str, AffineMatrix] = {
    "rotate": rotate_matrix,
    "shear_x": shear_x_matrix,
    "shear_y": shear_y_matrix,
    "translate_x": translate_x_matrix,
    "translate_y": translate_y_matrix,
}
"""Geometric ops as their per-sample matrices, so a policy can warp all of them in one call."""


def _warping(matrix_fn: AffineMatrix) -> Op:
    def op(images: torch.Tensor, magnitude: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
        return warp(images, matrix_fn(images, magnitude, sign))

    op.__name__ = matrix_fn.__name__.removesuffix("_matrix")
    op.__doc__ = matrix_fn.__doc__
    return op


shear_x = _warping(shear_x_matrix)
shear_y = _warping(shear_y_matrix)
translate_x = _warping(translate_x_matrix)
translate_y = _warping(translate_y_matrix)


OPS: dict[str, Op] = {
    "identity": identity,
    "auto_contrast": auto_contrast,
    "equalize": equalize,
    "rotate": rotate,
    "posterize": posterize,
    "solarize": solarize,
    "color": color,
    "contrast": contrast,
    "brightness": brightness,
    "sharpness": sharpness,
    "shear_x": shear_x,
    "shear_y": shear_y,
    "translate_x": translate_x,
    "translate_y": translate_y,
}
OP_NAMES: tuple[str, ...] = tuple(OPS)


def register_op(name: str, fn: Op) -> None:
    """Add an op to the registry under `name`; a policy built with that name can then draw it."""
    if name in OPS:
        raise ValueError(f"augmentation op {name!r} is already registered")
    OPS[name] = fn


class AugmentOp(nn.Module):
    """Module form of a registered op, looked up by name at call time (functions first, modules second)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in OPS:
            raise KeyError(f"unknown augmentation op {name!r}; known: {', '.join(OPS)}")
        self.name = name

    def forward(self, images: torch.Tensor, magnitude: torch.Tensor | float,
                sign: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Apply the op; scalar magnitude or sign apply to every sample."""
        n = images.shape[0]
        magnitude = torch.as_tensor(magnitude, dtype=images.dtype, device=images.device).expand(n)
        sign = torch.as_tensor(sign, dtype=images.dtype, device=images.device).expand(n)
        return OPS[self.name](images, magnitude, sign)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
