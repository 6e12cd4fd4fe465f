"""`dha run RECIPE --smoke`: the recipe's full-size networks through every stage in minutes, on synthetic data.

The smoke run keeps everything that shapes the networks (space, width, stages, image size, channels,
the number of classes the dataset kind implies) and everything that is searched, and shrinks only the
amount of work: a few dozen random images, one epoch of a few steps, small parity and latency samples.
It writes under its own name (`<name>_smoke`), so it never touches the real run's files. What it
proves: the supernet and the child build at full size, a joint step runs, derive is exact, export passes
its parity gate, and evaluate reads the exported file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.data.source import parse_spec
from dha_pipeline.fileio import write_with
from dha_pipeline.layout import RunLayout
from dha_pipeline.recipe import Recipe, recipe_from_dict

CLASSES_OF_KIND = {"imagenet": 1000, "cifar100": 100, "flowers102": 102, "cifar10": 10, "digits": 10}
"""Classes a dataset kind implies; other kinds (npz, imagefolder) default to 10 unless told."""
SPLIT_SIZES = {"train": 32, "val": 16, "test": 16}
BATCH_SIZE = 8


def smoke_classes(recipe: Recipe, classes: int | None) -> int:
    """The number of classes the smoke data gets: as told, or what the recipe's dataset kind implies."""
    if classes is not None:
        return classes
    kind, _ = parse_spec(recipe.data.dataset)
    return CLASSES_OF_KIND.get(kind, 10)


def write_synthetic(path: Path, classes: int, channels: int, image_size: int, seed: int) -> None:
    """Random uint8 images (NHWC) and labels cycling through the classes, as an npz archive."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"classes": np.array([f"class_{i}" for i in range(classes)])}
    offset = 0
    for split, count in SPLIT_SIZES.items():
        arrays[f"x_{split}"] = rng.integers(0, 256, (count, image_size, image_size, channels), dtype=np.uint8)
        arrays[f"y_{split}"] = (np.arange(count) + offset) % classes
        offset += count

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append '.npz' to the temp file's name
            np.savez(handle, **arrays)

    write_with(path, save)


def smoke_recipe(recipe: Recipe, classes: int | None = None) -> Recipe:
    """The smoke variant of `recipe`, with its synthetic data written (see the module docstring)."""
    channels = 3 if recipe.data.channels == "auto" else int(recipe.data.channels)
    name = f"{recipe.name}_smoke"
    layout = RunLayout.of(recipe.runs_dir, recipe.exports_dir, name)
    data_path = layout.smoke_data
    write_synthetic(data_path, smoke_classes(recipe, classes), channels, recipe.data.image_size, recipe.seed)
    raw = recipe.to_dict()
    raw["name"] = name
    raw["data"].update(dataset=f"npz:{data_path}", channels=str(channels), train_subset=0, download=False,
                       storage="memory")  # the synthetic npz is held in memory; streaming has its own tests
    raw["train"].update(epochs=1, batch_size=BATCH_SIZE, eval_batch_size=SPLIT_SIZES["val"], warmup_epochs=0,
                        checkpoint_every_steps=0)
    raw["search"].update(search_epochs=1, warmup_epochs=0, budget_minutes=0.0, latency_runs=5,
                         latency_table=str(layout.own_latency_table))
    raw["augment"].update(fraction_every=1)
    raw["export"].update(parity_samples=SPLIT_SIZES["val"])
    raw["evaluate"].update(batch_size=SPLIT_SIZES["test"], latency_runs=3)
    return recipe_from_dict(raw)


def child_summary(recipe: Recipe) -> dict[str, Any]:
    """The smoke run's derived child: its space, classes, input (channels, image size), parameters, MACs and
    predicted batch-1 latency (from the smoke run's own table: the child's blocks and the calibration
    networks, timed with few runs; None where the space has no latency table) on `latency_threads` threads."""
    from dha_pipeline.derive import load_child
    from dha_pipeline.errors import DhaError
    from dha_pipeline.latency import LatencyTable, complete_table, table_path
    from dha_pipeline.spaces.base import DataShape
    from dha_pipeline.spaces.cost import count_macs, count_params
    from dha_pipeline.spaces.registry import get_space

    child = load_child(recipe.layout.child)
    space = get_space(child.space)
    shape = DataShape(len(child.classes), child.channels, child.image_size)
    search = recipe.search
    summary = {"space": child.space, "classes": len(child.classes), "channels": child.channels,
               "image_size": child.image_size, "params": count_params(child.model),
               "macs": count_macs(child.model, child.channels, child.image_size), "predicted_latency_ms": None,
               "latency_threads": search.latency_threads}
    try:
        blocks = space.latency_blocks(recipe.model, shape, space.genotype_from_dict(child.info["genotype"]))
    except DhaError:
        return summary
    table = LatencyTable(table_path(search, recipe.runs_dir), search.latency_threads, search.latency_runs)
    complete_table(table, space, recipe.model, shape, blocks)
    return {**summary, "predicted_latency_ms": table.predict(blocks)}
