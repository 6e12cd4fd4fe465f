"""The 14 DA ops: range, identity at magnitude 0, direction, monotonicity, PIL/torchvision semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageEnhance, ImageOps
from torchvision.transforms import InterpolationMode

from dha_pipeline.augment.ops import OP_NAMES, OPS, AugmentOp, register_op

SIZE = 32
GRAY_LEVEL = 1 / 255
MAGNITUDE_INDEPENDENT = ("auto_contrast", "equalize")
STRENGTH_OPS = tuple(name for name in OP_NAMES if name not in ("identity", *MAGNITUDE_INDEPENDENT))


def scene(channels: int, size: int = SIZE) -> np.ndarray:
    """A uint8 image (H, W[, C]): per-channel ramps plus a checkerboard and seeded noise, levels in ~[20, 240]."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    checker = 25 * (((xx // 4) + (yy // 4)) % 2)
    ramps = [20 + 5 * xx, 30 + 4 * yy, 40 + 3 * (xx + yy) // 2]
    planes = [ramp + checker + rng.integers(0, 20, (size, size)) for ramp in ramps[:channels]]
    image = np.stack(planes, -1).clip(0, 255).astype(np.uint8)
    return image if channels == 3 else image[..., 0]


def to_tensor(array: np.ndarray | Image.Image) -> torch.Tensor:
    """uint8 (H, W[, C]) -> float (1, C, H, W) in [0, 1]."""
    tensor = torch.from_numpy(np.array(array)).float() / 255
    return (tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor[None])[None]


def run(name: str, images: torch.Tensor, magnitude: float, sign: float = 1.0) -> torch.Tensor:
    n = images.shape[0]
    return OPS[name](images, torch.full((n,), magnitude), torch.full((n,), sign))


def detail(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute Laplacian: high-frequency energy, which sharpening raises and smoothing lowers."""
    laplacian = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
    weight = laplacian.expand(images.shape[1], 1, 3, 3)
    return torch.nn.functional.conv2d(images, weight, groups=images.shape[1]).abs().mean()


def dot_image(size: int, row: int, col: int) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[..., row - 1:row + 2, col - 1:col + 2] = 1.0
    return image


def centroid(image: torch.Tensor) -> tuple[float, float]:
    """(row, col) centre of mass of a (1, 1, H, W) image."""
    mass = image[0, 0]
    rows, cols = torch.meshgrid(torch.arange(mass.shape[0]), torch.arange(mass.shape[1]), indexing="ij")
    return float((rows * mass).sum() / mass.sum()), float((cols * mass).sum() / mass.sum())


@pytest.fixture(params=[1, 3], ids=["gray", "rgb"])
def images(request: pytest.FixtureRequest) -> torch.Tensor:
    """Two copies of the scene, one mirrored, on the 8-bit grid."""
    image = to_tensor(scene(request.param))
    return torch.cat([image, image.flip(-1)])


def test_registry_order_and_names() -> None:
    assert OP_NAMES == ("identity", "auto_contrast", "equalize", "rotate", "posterize", "solarize", "color",
                        "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y")
    assert tuple(OPS)[:14] == OP_NAMES


@pytest.mark.parametrize("name", OP_NAMES)
def test_range_shape_dtype(name: str, images: torch.Tensor) -> None:
    for magnitude in (0.0, 2.5, 5.0, 10.0):
        for sign in (1.0, -1.0):
            out = run(name, images, magnitude, sign)
            assert out.shape == images.shape and out.dtype == images.dtype
            assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", [n for n in OP_NAMES if n not in MAGNITUDE_INDEPENDENT])
def test_identity_at_zero_magnitude(name: str, images: torch.Tensor) -> None:
    for sign in (1.0, -1.0):
        torch.testing.assert_close(run(name, images, 0.0, sign), images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MAGNITUDE_INDEPENDENT)
def test_magnitude_independent_ops(name: str, images: torch.Tensor) -> None:
    reference = run(name, images, 0.0)
    assert (reference - images).abs().mean() > GRAY_LEVEL
    for magnitude, sign in ((5.0, 1.0), (10.0, -1.0)):
        torch.testing.assert_close(run(name, images, magnitude, sign), reference)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("name", STRENGTH_OPS)
def test_monotone_in_magnitude(name: str, sign: float, images: torch.Tensor) -> None:
    if name == "color" and images.shape[1] == 1:
        pytest.skip("color is the identity on grayscale")
    change = [float((run(name, images, m, sign) - images).abs().mean()) for m in (2.0, 5.0, 10.0)]
    assert change[0] > 0 and change[0] < change[1] < change[2], change


def test_per_sample_magnitudes(images: torch.Tensor) -> None:
    magnitude, sign = torch.tensor([0.0, 10.0]), torch.tensor([1.0, 1.0])
    for name in STRENGTH_OPS:
        if name == "color" and images.shape[1] == 1:
            continue
        out = OPS[name](images, magnitude, sign)
        torch.testing.assert_close(out[0], images[0], atol=1e-5, rtol=0, msg=name)
        assert (out[1] - images[1]).abs().mean() > GRAY_LEVEL, name


def test_color_is_identity_on_grayscale() -> None:
    image = to_tensor(scene(1))
    for magnitude, sign in ((5.0, 1.0), (10.0, -1.0)):
        torch.testing.assert_close(run("color", image, magnitude, sign), image)


def test_enhance_directions(images: torch.Tensor) -> None:
    for sign in (1.0, -1.0):
        assert sign * (run("brightness", images, 5.0, sign).mean() - images.mean()) > 0
        assert sign * (run("contrast", images, 5.0, sign).std() - images.std()) > 0
        assert sign * (detail(run("sharpness", images, 5.0, sign)) - detail(images)) > 0
        if images.shape[1] == 3:
            assert sign * (run("color", images, 5.0, sign).std(dim=1).mean() - images.std(dim=1).mean()) > 0


def test_solarize_and_posterize_effects() -> None:
    ramp = torch.arange(256.0).view(1, 1, 16, 16) / 255
    solarized = run("solarize", ramp, 5.0)  # threshold 128: levels >= 128 invert
    torch.testing.assert_close(solarized.flatten()[:128], ramp.flatten()[:128])
    torch.testing.assert_close(solarized.flatten()[128:], 1 - ramp.flatten()[128:])
    torch.testing.assert_close(run("solarize", ramp, 10.0), 1 - ramp)
    levels = [run("posterize", ramp, m).unique().numel() for m in (0.0, 5.0, 10.0)]
    assert levels == [256, 64, 16]


def test_rotate_counter_clockwise_like_pil() -> None:
    size, centre = 33, 16
    image = dot_image(size, centre, centre + 10)  # right of the centre
    row, col = centroid(run("rotate", image, 10.0, 1.0))
    assert row < centre - 4 and col < centre + 10  # moved up: counter-clockwise as displayed
    pil = Image.fromarray((image[0, 0].numpy() * 255).astype(np.uint8)).rotate(30.0, resample=Image.BILINEAR)
    expected = centroid(to_tensor(pil))
    assert abs(row - expected[0]) < 0.3 and abs(col - expected[1]) < 0.3
    assert centroid(run("rotate", image, 10.0, -1.0))[0] > centre + 4


@pytest.mark.parametrize("name, axis", [("translate_x", 1), ("translate_y", 0)])
def test_translate_moves_right_and_down(name: str, axis: int) -> None:
    image = to_tensor(scene(3, size=40))
    shift = 9  # 0.45 * 40 * 5 / 10
    for sign in (1.0, -1.0):
        out = run(name, image, 5.0, sign)
        step = int(sign) * shift
        expected = torch.zeros_like(image)
        source = [slice(None)] * 4
        target = [slice(None)] * 4
        source[2 + axis] = slice(max(0, -step), 40 - max(0, step))
        target[2 + axis] = slice(max(0, step), 40 - max(0, -step))
        expected[tuple(target)] = image[tuple(source)]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, axis", [("shear_x", 0), ("shear_y", 1)])
def test_shear_matches_torchvision_autoaugment(name: str, axis: int) -> None:
    image = to_tensor(scene(3))
    for magnitude, sign in ((10.0, 1.0), (4.0, -1.0)):
        factor = sign * 0.3 * magnitude / 10
        shear = [0.0, 0.0]
        shear[axis] = math.degrees(math.atan(factor))
        expected = TF.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear,
                             interpolation=InterpolationMode.BILINEAR, center=[0, 0])
        torch.testing.assert_close(run(name, image, magnitude, sign), expected, atol=1e-4, rtol=0)


def pil_reference(name: str, pil: Image.Image, magnitude: float, sign: float) -> Image.Image:
    factor = 1 + sign * 0.9 * magnitude / 10
    return {
        "brightness": lambda: ImageEnhance.Brightness(pil).enhance(factor),
        "contrast": lambda: ImageEnhance.Contrast(pil).enhance(factor),
        "color": lambda: ImageEnhance.Color(pil).enhance(factor),
        "sharpness": lambda: ImageEnhance.Sharpness(pil).enhance(factor),
        "solarize": lambda: ImageOps.solarize(pil, 256 * (1 - magnitude / 10)),
        "posterize": lambda: ImageOps.posterize(pil, round(8 - 4 * magnitude / 10)),
        "equalize": lambda: ImageOps.equalize(pil),
        "auto_contrast": lambda: ImageOps.autocontrast(pil),
    }[name]()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["brightness", "contrast", "color", "sharpness", "solarize", "posterize",
                                  "equalize", "auto_contrast"])
def test_agrees_with_pil(name: str, channels: int) -> None:
    array = scene(channels)
    image = to_tensor(array)
    for magnitude, sign in ((3.0, 1.0), (7.0, -1.0), (10.0, 1.0)):
        expected = to_tensor(pil_reference(name, Image.fromarray(array), magnitude, sign))
        torch.testing.assert_close(run(name, image, magnitude, sign), expected, atol=2 * GRAY_LEVEL, rtol=0)


def test_auto_contrast_keeps_constant_channel() -> None:
    image = torch.full((1, 3, 8, 8), 0.4)
    image[:, 0, :4] = 0.2
    out = run("auto_contrast", image, 0.0)
    assert out[:, 0].min() == 0.0 and out[:, 0].max() == 1.0
    torch.testing.assert_close(out[:, 1:], image[:, 1:])


def test_module_wrapper_and_open_registry() -> None:
    image = to_tensor(scene(3))
    torch.testing.assert_close(AugmentOp("brightness")(image, 5.0, -1.0), run("brightness", image, 5.0, -1.0))
    register_op("invert", lambda images, magnitude, sign: 1 - images)
    try:
        torch.testing.assert_close(AugmentOp("invert")(image, 0.0), 1 - image)
        with pytest.raises(ValueError):
            register_op("invert", OPS["identity"])
    finally:
        del OPS["invert"]
    with pytest.raises(KeyError):
        AugmentOp("no_such_op")
