"""Does the streaming loader keep the trainer busy? Images per second of the file stream against those of
a DHA training step, for the ImageNet recipe's network at its size.

The loader side reads a folder of 500x375 JPEGs (written once under --workdir) through the training
stream (`TrainStream`: DataLoader workers decode, random-resized-crop and flip on uint8, pinned memory
on CUDA, copy to the device) with each worker count of --workers; the first batch (worker start) is
not timed. The step side is `SearchRun.train_step` of the recipe (joint DHA, the MobileNet supernet) on
a fixed device batch of the same size, timed to the end of the device's work. The last lines are the
loader / step ratios: at 1.0 or more the loader keeps up, below it the step waits on data.

    python bench/loader_vs_step.py [--device cuda] [--batch 128] [--workers 4 8 16] [--precision bf16]
    python bench/loader_vs_step.py --device cpu --batch 8 --images 256 --workers 1 2 --set model.width_mult=0.35
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, synthetic_data  # noqa: E402
from stream_memory import write_folder  # noqa: E402

from dha_pipeline.data.imagefolder import load as load_imagefolder  # noqa: E402
from dha_pipeline.data.stream import TrainStream, index_files  # noqa: E402
from dha_pipeline.recipe import load_recipe  # noqa: E402
from dha_pipeline.search.loop import SearchRun  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "imagenet_mobilenet.toml"


def loader_rate(folder: Path, size: int, batch: int, workers: int, device: torch.device, batches: int) -> float:
    """Images per second the training stream delivers onto `device` (after its first batch)."""
    source = load_imagefolder(str(folder))
    train = source.splits["train"]
    index, _ = index_files(train.images.paths, np.asarray(train.labels), train.images.root, skip_bad=False,
                           description="indexing")
    steps = min(batches + 1, len(index) // batch)
    stream = TrainStream(index, size, 3, (0.08, 1.0), True, 0, batch, steps, workers, device, 0, 1, False)
    times = []
    started = time.perf_counter()
    for _batch in stream.epoch(0, 0):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - started)
        started = now
    return batch / statistics.median(times[1:])


def step_rate(args: argparse.Namespace) -> float:
    """Images per second of the recipe's DHA training step on a fixed device batch."""
    overrides = [f'device="{args.device}"', f"train.batch_size={args.batch}", f'train.precision="{args.precision}"',
                 'data.storage="memory"', 'runs_dir="/tmp/dha_loader_bench"', *args.set]
    recipe = load_recipe(RECIPE, overrides)
    data = synthetic_data(2 * args.batch, recipe.data.image_size, classes=1000)
    run = SearchRun(recipe, data)
    run.network.train()
    index = torch.arange(args.batch, device=run.device)
    images, labels = run.source.splits["train"].take(index)
    seconds = interleaved_medians({"step": lambda: run.train_step(images, labels)}, args.rounds)["step"]
    return args.batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128, help="per-process batch (the recipe's 1024 over 8 GPUs)")
    parser.add_argument("--images", type=int, default=4096, help="JPEGs in the folder the loader reads")
    parser.add_argument("--batches", type=int, default=20, help="batches timed per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8, 12])
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], help="recipe override for the step, KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dha-loader-bench"))
    args = parser.parse_args()
    device = torch.device(args.device)
    size = load_recipe(RECIPE, args.set).data.image_size
    folder = write_folder(args.workdir / f"images-{args.images}", args.images, 500, 375, 10)
    step = step_rate(args)
    print(f"torch {torch.__version__}, device {device}, batch {args.batch}x3x{size}x{size}, precision "
          f"{args.precision}, overrides {args.set}")
    print(f"dha_step_img_per_s={step:.0f}")
    for workers in args.workers:
        rate = loader_rate(folder, size, args.batch, workers, device, args.batches)
        print(f"loader_workers={workers} loader_img_per_s={rate:.0f} loader_vs_step={rate / step:.2f}")


if __name__ == "__main__":
    main()
