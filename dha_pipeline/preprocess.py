"""Image preprocessing shared by prepare, training, export, evaluate and predict.

Only numpy and Pillow are imported here so that `dha predict` runs without
torch. The same functions shape the training cache and the images a deployed
model sees, so train-time and deploy-time inputs match exactly:
uint8 HWC image -> `to_channels` -> `resize_image` -> /255 -> `standardize`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from dha_pipeline.errors import DhaError

ArrayT = TypeVar("ArrayT")

PIXEL_SCALE = 255.0
RESIZE_FILTER = "bilinear"
DIRECT_MODES = ("L", "LA", "RGB", "RGBA")
SIXTEEN_BIT_TO_EIGHT = 257.0


def read_image(path: Path) -> np.ndarray:
    """Decode an image file; see `decode_image`."""
    if not path.is_file():
        raise DhaError(f"image '{path}' does not exist", "check the path")
    return decode_image(path.read_bytes(), str(path))


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes to uint8 HW or HWC (first frame of animations).

    Pillow decodes for training, evaluation and prediction alike (as torchvision's
    ImageFolder does), so every stage sees identical pixels. Palette images become
    RGB(A), 16-bit grayscale is scaled to 8 bits.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode.startswith("I;16"):
                return np.round(np.asarray(image, dtype=np.float64) / SIXTEEN_BIT_TO_EIGHT).astype(np.uint8)
            if image.mode not in DIRECT_MODES:
                image = image.convert("RGBA" if "transparency" in image.info or image.mode == "PA" else "RGB")
            return np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise DhaError(f"'{name}' is not a readable image",
                       "pass JPEG, PNG, BMP, GIF, WebP or TIFF files") from None


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Return `image` (uint8, HW or HWC with C in 1..4) as HWC with `channels` (1 or 3) channels.

    Alpha is dropped; RGB -> gray uses ITU-R 601 luma, as Pillow's "L" mode does.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] in (2, 4):
        image = image[:, :, :-1]
    if image.shape[2] == channels:
        return np.ascontiguousarray(image)
    if channels == 3:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))
    gray = Image.fromarray(np.ascontiguousarray(image)).convert("L")
    return np.asarray(gray)[:, :, None]


def _pillow_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A uint8 HWC image at `width` x `height` with Pillow's antialiased bilinear filter."""
    channels = image.shape[2]
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR)).reshape(height, width, channels)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 HWC image to `size` x `size` with Pillow's antialiased bilinear filter."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return _pillow_resize(image, size, size)


def center_crop_resize(image: np.ndarray, size: int, crop: float) -> np.ndarray:
    """Resize a uint8 HWC image so its shorter side is round(size / crop), then cut the central
    `size` x `size` square (the usual evaluation view of ImageNet-style data)."""
    height, width = image.shape[:2]
    short = max(round(size / crop), size)
    scale = short / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    resized = _pillow_resize(image, new_w, new_h)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def prepare_image(image: np.ndarray, size: int, channels: int, crop: float = 1.0) -> np.ndarray:
    """One raw uint8 image to the model's uint8 HWC grid: the whole image resized to a square
    (`crop` 1), or the shorter side resized and the center cropped (`crop` < 1)."""
    image = to_channels(image, channels)
    return resize_image(image, size) if crop >= 1.0 else center_crop_resize(image, size, crop)


def standardize(unit_batch: ArrayT, mean: Any, std: Any) -> ArrayT:
    """(x - mean) / std for an NCHW batch in [0, 1]; numpy or torch, mean/std shaped (1, C, 1, 1)."""
    return (unit_batch - mean) / std  # type: ignore[operator]


def model_input(images_nhwc: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 NHWC images -> float32 NCHW model input, normalized as in training."""
    unit = images_nhwc.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(PIXEL_SCALE)
    shape = (1, len(mean), 1, 1)
    return standardize(unit, np.asarray(mean, np.float32).reshape(shape),
                       np.asarray(std, np.float32).reshape(shape)).astype(np.float32)
