"""Shared fixtures: tiny recipes and datasets made by the tests themselves."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main

if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker, in its subprocesses too: no oversubscription
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

TINY_RECIPE = """
name = "tiny"
seed = 0
device = "cpu"

[data]
dataset = "digits"
image_size = 8
channels = "1"

[model]
init_channels = 4
layers = 3

[train]
epochs = 2
batch_size = 64
lr = 0.05

[augment]
crop_padding = 1
hflip = false

[search]
mode = "manual"
components = []
tensorboard = "off"  # its import costs 3 s a process; tested in test_loop.py

[export]
parity_samples = 256
formats = ["onnx", "torchscript"]  # .pt2 (about 5 s an export) is tested in test_deploy.py

[evaluate]
latency_runs = 2
"""


INT8_MAX_DROP = 3.0
"""The int8 gate of the tiny child's export (see `int8_export`)."""
BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench_script(name: str) -> ModuleType:
    """The module of `bench/<name>.py`, loaded from its file (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_recipe(directory: Path, text: str = TINY_RECIPE, name: str = "recipe.toml") -> Path:
    """Write a recipe whose runs/ and exports/ live under `directory`."""
    path = directory / name
    path.write_text(f'runs_dir = "{directory / "runs"}"\nexports_dir = "{directory / "exports"}"\n' + text)
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A 2-epoch, 8x8 digits recipe in a fresh directory."""
    return write_recipe(tmp_path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished `dha run` of the tiny recipe, shared read-only by many tests."""
    directory = tmp_path_factory.mktemp("tiny_run")
    assert main(["run", str(write_recipe(directory))]) == 0
    return directory


@pytest.fixture(scope="session")
def int8_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """exports/tiny/ of a copy of the shared tiny run, exported again with --int8 (every format). The tiny
    child (2.9 k parameters, 4 channels, 2 epochs, 81 % val) has thin margins: int8 moves 2 of its 144 val
    images (1.4 points) on an AVX2 CPU, so its gate allows 3 points; the default 1-point gate holds for the
    quickstart child (no drop)."""
    import json
    import shutil

    directory = tmp_path_factory.mktemp("int8_export")
    shutil.copytree(tiny_run / "runs" / "tiny", directory / "runs" / "tiny")
    exports = directory / "exports"
    assert main(["export", str(directory / "runs" / "tiny"), "--int8", "--force", "--format", "onnx,torchscript,pt2",
                 "--set", f"exports_dir={json.dumps(str(exports))}",
                 "--set", f"export.int8_max_drop={INT8_MAX_DROP}"]) == 0
    return exports / "tiny"


@pytest.fixture(scope="module")
def run_dir(tiny_run: Path) -> Path:
    """runs/tiny/ of the shared tiny run."""
    return tiny_run / "runs" / "tiny"


@pytest.fixture(scope="module")
def export_dir(tiny_run: Path) -> Path:
    """exports/tiny/ of the shared tiny run."""
    return tiny_run / "exports" / "tiny"


def make_npz(path: Path, *, n_train: int = 60, n_test: int = 20, size: int = 10, channels: int | None = None,
             classes: tuple[str, ...] = ("a", "b", "c"), seed: int = 0, **replace: np.ndarray) -> Path:
    """A small npz dataset whose class is encoded in the image brightness."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % len(classes)
        shape = (n, size, size) if channels is None else (n, size, size, channels)
        x = (rng.integers(0, 40, shape) + (y * 80).reshape((-1,) + (1,) * (len(shape) - 1))).astype(np.uint8)
        return x, y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
              "classes": np.array(classes)}
    arrays.update(replace)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def make_imagefolder(root: Path, *, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6,
                     splits: tuple[str, ...] = ("train", "test"), size: tuple[int, int] = (12, 9)) -> Path:
    """A small ImageFolder tree of RGB PNG/JPEG images of varying sizes, one grayscale per class."""
    rng = np.random.default_rng(0)
    for split in splits:
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = size[0] + i, size[1] + 2 * i
                pixels = (rng.integers(0, 60, (h, w, 3)) + 150 * label).astype(np.uint8)
                image = Image.fromarray(pixels)
                if i == 0:
                    image = image.convert("L")
                image.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def unsettle_batchnorms(module: torch.nn.Module, forward: Callable[[torch.Tensor], object]) -> None:
    """Move every BatchNorm's statistics (three training forwards of 8 random 3x16x16 images) and affine
    parameters away from their defaults, then leave `module` in eval mode: folding is tested on these."""
    module.train()
    for _ in range(3):
        forward(torch.randn(8, 3, 16, 16))
    for norm in module.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.2, 0.2)
    module.eval()
