"""Throughput of the batched learned policy vs torchvision's PIL AutoAugment, per sample.

Both produce a batch-ready float tensor from uint8 images: ours samples op pairs
per image and applies them grouped by op on the whole batch; the baseline runs
torchvision's AutoAugment (CIFAR-10 policy) on one PIL image at a time and stacks.
The last line is the speedup the issue tracks (goal >= 10).

    python bench/augment.py [--batch 256] [--size 32] [--rounds 10] [--device cuda]

With --device cuda the policy runs on the GPU (its sync-free form), timed to the end of the GPU's
work; the baseline stays one CPU process, as the issue states the goal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import AutoAugment, AutoAugmentPolicy
from torchvision.transforms.functional import pil_to_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians  # noqa: E402

from dha_pipeline.augment.policy import AugmentPolicy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cpu", help="where the learned policy runs (cpu, cuda)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    device = torch.device(args.device)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    policy = AugmentPolicy().to(device)
    generator = torch.Generator().manual_seed(0)
    autoaugment = AutoAugment(AutoAugmentPolicy.CIFAR10)
    pil_images = [Image.fromarray(image) for image in images]

    def ours() -> torch.Tensor:
        unit = batch.float().div_(255)
        out = policy.apply(unit, policy.sample(len(unit), generator))
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def pil_autoaugment() -> torch.Tensor:
        return torch.stack([pil_to_tensor(autoaugment(image)) for image in pil_images]).float().div_(255)

    medians = interleaved_medians({"policy": ours, "pil_autoaugment": pil_autoaugment}, args.rounds)
    rates = {name: args.batch / seconds for name, seconds in medians.items()}
    print(f"torch {torch.__version__}, policy on {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}x3x{args.size}x{args.size}, rounds={args.rounds}")
    for name, rate in rates.items():
        print(f"{name}_img_per_s={rate:.0f}")
    print(f"policy_vs_pil_autoaugment_speedup={rates['policy'] / rates['pil_autoaugment']:.2f}")


if __name__ == "__main__":
    main()
