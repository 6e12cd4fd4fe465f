"""Peak memory of `dha prepare` and `dha search` on streamed image folders of growing size.

Writes folders of N JPEGs (500x375 by default, 10 classes, smooth colour fields with noise so they
compress like photos), prepares each with data.storage = "files" and searches one epoch (DHA, a
small supernet at the recipe's size). A sampler thread reads /proc every 0.1 s and sums, over the
stage's process and every child (DataLoader workers), both RSS (pages shared by forked workers
counted once per process: an upper bound) and PSS (shared pages divided among their users: what the
tree really holds). The last lines are the peaks of the largest folder over the smallest (the issue
asks that they do not grow with the number of images, and stay under 2.5 GB).

    python bench/stream_memory.py [--counts 10000 30000] [--workdir /tmp/dha-stream-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 10


def write_folder(root: Path, count: int, width: int, height: int, test_count: int) -> Path:
    """An ImageFolder tree of `count` train and `test_count` test JPEGs (kept between runs)."""
    done = root / f".complete-{count}-{width}x{height}"
    if done.is_file():
        return root
    rng = np.random.default_rng(count)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for split, n in (("train", count), ("test", test_count)):
        for index in range(n):
            label = index % CLASSES
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            angle = rng.uniform(0, 2 * np.pi)
            field = np.cos(angle) * xs / width + np.sin(angle) * ys / height
            base = np.stack([field * c for c in (80 + 15 * label, 160 - 10 * label, 120)], axis=-1)
            noise = rng.normal(0, 12, (-(-height // 4), -(-width // 4), 3)).repeat(4, 0).repeat(4, 1)
            pixels = np.clip(base + 40 + noise[:height, :width], 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
    done.touch()
    return root


def tree_memory(pid: int) -> tuple[int, int]:
    """(summed RSS, summed PSS) in bytes of `pid` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    rss = pss = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def peak_memory(command: list[str], log: Path) -> dict[str, float]:
    """Run `command`, sampling its process tree's memory; peaks in MB and the wall seconds."""
    peaks = {"rss": 0, "pss": 0}
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss, pss = tree_memory(process.pid)
                peaks["rss"], peaks["pss"] = max(peaks["rss"], rss), max(peaks["pss"], pss)
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        stop.set()
        sampler.join()
    if code:
        raise SystemExit(f"{' '.join(command)} failed ({code}); see {log}")
    return {"peak_rss_mb": peaks["rss"] / 2**20, "peak_pss_mb": peaks["pss"] / 2**20,
            "seconds": time.perf_counter() - started}


def recipe_text(name: str, folder: Path, runs: Path, args: argparse.Namespace) -> str:
    """A streamed DHA recipe over `folder`: one epoch, a small supernet."""
    return f"""name = "{name}"
runs_dir = "{runs}"
exports_dir = "{runs / 'exports'}"
device = "cpu"
[data]
dataset = "imagefolder:{folder}"
image_size = {args.image_size}
channels = "3"
storage = "files"
workers = {args.workers}
val_fraction = 0.05
eval_crop = 0.875
[model]
init_channels = 4
layers = 3
[train]
epochs = 1
batch_size = {args.batch}
[search]
mode = "joint"
components = ["nas", "da", "hpo"]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dha-stream-bench"))
    args = parser.parse_args()
    rows = []
    for count in args.counts:
        folder = write_folder(args.workdir / f"images-{count}", count, args.width, args.height, 500)
        runs = args.workdir / f"runs-{count}"
        recipe = args.workdir / f"stream{count}.toml"
        recipe.write_text(recipe_text(f"stream{count}", folder, runs, args))
        row: dict[str, float | int] = {"images": count}
        for stage in ("prepare", "search"):
            measured = peak_memory([sys.executable, "-m", "cli", stage, str(recipe), "--force"],
                                   args.workdir / f"{stage}-{count}.log")
            row.update({f"{stage}_{key}": value for key, value in measured.items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{'images':>8} {'prepare RSS':>12} {'prepare PSS':>12} {'search RSS':>11} {'search PSS':>11} "
          f"{'search s':>9}")
    for row in rows:
        print(f"{row['images']:>8} {row['prepare_peak_rss_mb']:>10.0f}MB {row['prepare_peak_pss_mb']:>10.0f}MB "
              f"{row['search_peak_rss_mb']:>9.0f}MB {row['search_peak_pss_mb']:>9.0f}MB {row['search_seconds']:>9.0f}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        for stage in ("prepare", "search"):
            print(f"{stage}: peak PSS {last['images']} / {first['images']} images = "
                  f"{last[f'{stage}_peak_pss_mb'] / first[f'{stage}_peak_pss_mb']:.2f}x")


if __name__ == "__main__":
    main()
