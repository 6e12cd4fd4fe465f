"""Image preprocessing shared by training and deployment (dha_pipeline/preprocess.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dha_pipeline.preprocess import (model_input, prepare_image, resize_image,
                                     standardize, to_channels)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (7, 9, 3), dtype=np.uint8)
GRAY = RNG.integers(0, 256, (7, 9), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (7, 9), dtype=np.uint8)


def pil_gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L"))


# --------------------------------------------------------------------------- to_channels


@pytest.mark.parametrize("gray", [GRAY, GRAY[:, :, None]], ids=["HW", "HW1"])
def test_gray_to_rgb_repeats(gray: np.ndarray) -> None:
    out = to_channels(gray, 3)
    assert out.shape == (7, 9, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], GRAY)


@pytest.mark.parametrize("gray", [GRAY, GRAY[:, :, None]], ids=["HW", "HW1"])
def test_gray_to_gray_adds_channel_axis(gray: np.ndarray) -> None:
    out = to_channels(gray, 1)
    assert out.shape == (7, 9, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], GRAY)


def test_rgb_to_gray_matches_pillow_luma() -> None:
    out = to_channels(RGB, 1)
    assert out.shape == (7, 9, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], pil_gray(RGB))
    # ITU-R 601 luma, as documented
    luma = RGB.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out[:, :, 0].astype(np.float64) - luma).max() <= 1.0


def test_rgb_to_rgb_unchanged_and_contiguous() -> None:
    view = np.asfortranarray(RGB)[:, ::-1]  # a non-contiguous view
    out = to_channels(view, 3)
    np.testing.assert_array_equal(out, view)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(to_channels(RGB[:, ::-1], 1)[:, :, 0], pil_gray(RGB[:, ::-1]))


def test_alpha_dropped() -> None:
    rgba = np.dstack([RGB, ALPHA])
    np.testing.assert_array_equal(to_channels(rgba, 3), RGB)
    np.testing.assert_array_equal(to_channels(rgba, 1)[:, :, 0], pil_gray(RGB))
    la = np.dstack([GRAY, ALPHA])
    np.testing.assert_array_equal(to_channels(la, 1)[:, :, 0], GRAY)
    out = to_channels(la, 3)
    assert out.shape == (7, 9, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], GRAY)


def test_to_channels_does_not_modify_input() -> None:
    image = np.dstack([RGB, ALPHA])
    before = image.copy()
    for channels in (1, 3):
        out = to_channels(image, channels)
        assert not np.shares_memory(out, image)  # alpha dropped: a new array
    np.testing.assert_array_equal(image, before)


# --------------------------------------------------------------------------- resize_image


@pytest.mark.parametrize("channels", [1, 3])
def test_resize_same_size_is_noop(channels: int) -> None:
    image = RNG.integers(0, 256, (6, 6, channels), dtype=np.uint8)
    out = resize_image(image, 6)
    assert out.dtype == np.uint8 and out.shape == (6, 6, channels)
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [4, 16])
def test_resize_shape_dtype_and_pillow_bilinear(channels: int, size: int) -> None:
    image = to_channels(RGB, channels)  # 7x9, non-square
    out = resize_image(image, size)
    assert out.shape == (size, size, channels) and out.dtype == np.uint8
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    expected = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR)).reshape(size, size, channels)
    np.testing.assert_array_equal(out, expected)


def test_resize_constant_image_stays_constant() -> None:
    image = np.full((11, 5, 3), 77, dtype=np.uint8)
    out = resize_image(image, 8)
    assert (out == 77).all()


def test_resize_downscale_averages() -> None:
    """The antialiased filter keeps the mean brightness of a downscaled image."""
    image = RNG.integers(0, 256, (64, 64, 1), dtype=np.uint8)
    out = resize_image(image, 8)
    assert abs(out.mean() - image.mean()) < 3
    assert out.std() < image.std() / 2  # averaging smooths the noise


def test_prepare_image_is_channels_then_resize() -> None:
    for channels in (1, 3):
        for image in (RGB, GRAY, np.dstack([RGB, ALPHA])):
            np.testing.assert_array_equal(prepare_image(image, 5, channels),
                                          resize_image(to_channels(image, channels), 5))
            assert prepare_image(image, 5, channels).shape == (5, 5, channels)


# --------------------------------------------------------------------------- model_input / standardize


@pytest.mark.parametrize("channels", [1, 3])
def test_model_input_matches_manual(channels: int) -> None:
    images = RNG.integers(0, 256, (4, 5, 6, channels), dtype=np.uint8)
    mean = [0.1, 0.5, 0.9][:channels]
    std = [0.2, 0.25, 0.3][:channels]
    out = model_input(images, mean, std)
    assert out.dtype == np.float32 and out.shape == (4, channels, 5, 6)
    nchw = images.transpose(0, 3, 1, 2).astype(np.float64) / 255.0
    expected = (nchw - np.array(mean)[None, :, None, None]) / np.array(std)[None, :, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # channel c of image n at (h, w)
    n, c, h, w = 2, channels - 1, 3, 4
    assert out[n, c, h, w] == pytest.approx((images[n, h, w, c] / 255.0 - mean[c]) / std[c], rel=1e-5, abs=1e-6)


def test_model_input_identity_normalization() -> None:
    images = np.array([[[[0], [255]], [[51], [102]]]], dtype=np.uint8)  # 1x2x2x1
    out = model_input(images, [0.0], [1.0])
    np.testing.assert_allclose(out, [[[[0.0, 1.0], [0.2, 0.4]]]], rtol=1e-6)


def test_standardize_numpy_and_torch_agree() -> None:
    unit = RNG.random((3, 3, 4, 5)).astype(np.float32)
    mean = np.array([0.4, 0.5, 0.6], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.2, 0.3, 0.25], np.float32).reshape(1, 3, 1, 1)
    from_numpy = standardize(unit, mean, std)
    from_torch = standardize(torch.from_numpy(unit), torch.from_numpy(mean), torch.from_numpy(std))
    assert isinstance(from_numpy, np.ndarray) and isinstance(from_torch, torch.Tensor)
    assert from_torch.dtype == torch.float32 and tuple(from_torch.shape) == (3, 3, 4, 5)
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_numpy, (unit - mean) / std, rtol=1e-6)


def test_standardize_consistent_with_model_input() -> None:
    images = RNG.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    mean, std = [0.3, 0.4, 0.5], [0.1, 0.2, 0.3]
    unit = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    via_torch = standardize(unit, torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1))
    np.testing.assert_allclose(via_torch.numpy(), model_input(images, mean, std), rtol=1e-5, atol=1e-6)


def test_preprocess_imports_without_torch() -> None:
    code = "import sys, dha_pipeline.preprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
