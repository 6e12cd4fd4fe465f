"""Base augmentation throughput: dha's indexed crop/flip vs Kornia's augmentation modules.

Both run on the same CPU batch (random crop with zero padding + horizontal flip),
interleaved, in one process. Prints img/s of each and, last, the speedup ratio.

    python bench/base_augment.py [--batch 256] [--size 32] [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import kornia.augmentation as K
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians  # noqa: E402

from dha_pipeline.augment.base import BaseAugment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--padding", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    batch = torch.rand(args.batch, 3, args.size, args.size)
    ours = BaseAugment(crop_padding=args.padding, hflip=True)
    generator = torch.Generator().manual_seed(0)
    kornia_pipeline = K.AugmentationSequential(K.RandomCrop((args.size, args.size), padding=args.padding),
                                               K.RandomHorizontalFlip())
    candidates = {"dha": lambda: ours(batch, generator), "kornia": lambda: kornia_pipeline(batch)}
    medians = interleaved_medians(candidates, args.repeats, warmup=1)
    rates = {name: args.batch / seconds for name, seconds in medians.items()}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}x3x{args.size}x{args.size}")
    for name, rate in rates.items():
        print(f"{name}_img_per_s={rate:.0f}")
    print(f"base_augment_vs_kornia_speedup={rates['dha'] / rates['kornia']:.2f}")


if __name__ == "__main__":
    main()
