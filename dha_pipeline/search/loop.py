"""The training loop. Manual mode: a fixed genotype trained with base augmentation,
momentum SGD and a cosine learning rate, checkpointed atomically every epoch.

Data live on the training device as uint8 tensors; each step indexes a batch,
augments it there, normalizes it with the shared `standardize`, and steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import TextColumn
from torch import nn
from torch.nn import functional as F

from dha_pipeline.augment.base import BaseAugment
from dha_pipeline.data.cache import PreparedData
from dha_pipeline.device import resolve_device
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.metrics import RunningMean, write_csv
from dha_pipeline.preprocess import PIXEL_SCALE, standardize
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe, TrainConfig
from dha_pipeline.search.checkpoint import load_checkpoint, save_checkpoint
from dha_pipeline.spaces.cost import count_macs, count_params
from dha_pipeline.spaces.darts import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.genotype import known_genotype

CHECKPOINT = Path("checkpoints") / "last.pt"
HISTORY = "history.csv"


@dataclass
class TrainOutcome:
    """What a finished training run reports."""

    history: list[dict[str, float]]
    params: int
    macs: int
    seconds: float
    checkpoint: Path
    resumed_from_epoch: int


def network_config(recipe: Recipe, data: PreparedData) -> NetworkConfig:
    """The network the recipe asks for, shaped for the data."""
    model = recipe.model
    return NetworkConfig(num_classes=len(data.classes), in_channels=data.channels, image_size=data.image_size,
                         init_channels=model.init_channels, layers=model.layers,
                         genotype=known_genotype(model.genotype), stem=model.stem,
                         auxiliary=model.auxiliary, drop_path=model.drop_path)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay from `lr` to `lr_min` over the remaining steps."""
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return config.lr_min + 0.5 * (config.lr - config.lr_min) * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class DeviceImages:
    """A split held on the device as uint8 NCHW, served as normalized float batches."""

    def __init__(self, x_nhwc: np.ndarray, y: np.ndarray, mean: list[float], std: list[float],
                 device: torch.device) -> None:
        self.x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(device)
        self.y = torch.from_numpy(y).to(device)
        shape = (1, len(mean), 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(shape)

    def __len__(self) -> int:
        return len(self.y)

    def unit(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Images at `index` as floats in [0, 1]."""
        return self.x[index].float().div_(PIXEL_SCALE)

    def normalize(self, unit_batch: torch.Tensor) -> torch.Tensor:
        """The model input for a batch in [0, 1]."""
        return standardize(unit_batch, self.mean, self.std)


@torch.no_grad()
def evaluate_split(model: nn.Module, images: DeviceImages, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of `model` (eval mode) on a whole split."""
    model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        index = slice(start, start + batch_size)
        logits = model(images.normalize(images.unit(index)))
        loss += F.cross_entropy(logits, images.y[index], reduction="sum").item()
        correct += (logits.argmax(1) == images.y[index]).sum().item()
    return loss / len(images), correct / len(images)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(generator: torch.Generator, state: dict[str, Any]) -> None:
    generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_manual(recipe: Recipe, data: PreparedData, *, resume: bool = False) -> TrainOutcome:
    """Train the recipe's fixed network; returns its history and cost. Writes only under runs/<name>/."""
    run_dir = recipe.run_dir
    device = resolve_device(recipe.device)
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    config = network_config(recipe, data)
    model = DartsNetwork(config).to(device)
    train_cfg = recipe.train
    optimizer = torch.optim.SGD(model.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum,
                                weight_decay=train_cfg.weight_decay)
    augment = BaseAugment(recipe.augment.crop_padding, recipe.augment.hflip, recipe.augment.cutout)
    train_images = DeviceImages(data.x["train"], data.y["train"], data.mean, data.std, device)
    val_images = DeviceImages(data.x["val"], data.y["val"], data.mean, data.std, device)
    batch_size = min(train_cfg.batch_size, len(train_images))
    steps_per_epoch = len(train_images) // batch_size
    history: list[dict[str, float]] = []
    start_epoch = 0
    checkpoint_path = run_dir / CHECKPOINT
    if resume and checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path, map_location=device)
        if state["recipe_sha256"] != recipe.section_sha256(*SEARCH_SECTIONS):
            raise DhaError(f"checkpoint '{checkpoint_path}' was written by a different recipe",
                           "resume with the same recipe, or start over with --force")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _restore_rng(generator, state["rng"])
        history = state["history"]
        start_epoch = int(state["epoch"])
    params = count_params(model)
    macs = count_macs(model, config.in_channels, config.image_size)
    started = time.perf_counter()
    columns = TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} lr {task.fields[lr]:.4f}")
    with progress_bar(columns) as progress:
        for epoch in range(start_epoch, train_cfg.epochs):
            task = progress.add_task(f"epoch {epoch + 1}/{train_cfg.epochs}", total=steps_per_epoch,
                                     loss=0.0, acc=0.0, lr=0.0)
            epoch_started = time.perf_counter()
            model.train()
            loss_mean, acc_mean = RunningMean(), RunningMean()
            order = torch.randperm(len(train_images), generator=generator).to(device)
            for step_in_epoch in range(steps_per_epoch):
                lr = learning_rate(train_cfg, epoch * steps_per_epoch + step_in_epoch, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                index = order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]
                labels = train_images.y[index]
                inputs = train_images.normalize(augment(train_images.unit(index), generator))
                logits, aux_logits = model.forward_train(inputs)
                loss = F.cross_entropy(logits, labels, label_smoothing=train_cfg.label_smoothing)
                if aux_logits is not None:
                    loss = loss + recipe.model.auxiliary_weight * F.cross_entropy(aux_logits, labels)
                if not torch.isfinite(loss):
                    raise DhaError(f"training loss became {loss.item()} at epoch {epoch + 1}; the last good "
                                   f"checkpoint is kept in '{checkpoint_path}'",
                                   "lower train.lr or raise train.grad_clip protection (train.grad_clip > 0)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if train_cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                optimizer.step()
                loss_mean.update(loss.item(), len(index))
                acc_mean.update((logits.argmax(1) == labels).float().mean().item(), len(index))
                progress.update(task, advance=1, loss=loss_mean.mean, acc=acc_mean.mean, lr=lr)
            val_loss, val_acc = evaluate_split(model, val_images, train_cfg.eval_batch_size)
            history.append({"epoch": epoch + 1, "train_loss": loss_mean.mean, "train_top1": acc_mean.mean,
                            "val_loss": val_loss, "val_top1": val_acc, "lr": lr,
                            "weight_decay": train_cfg.weight_decay,
                            "seconds": time.perf_counter() - epoch_started})
            progress.update(task, description=f"epoch {epoch + 1}/{train_cfg.epochs} val {val_acc:.3f}")
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "epoch": epoch + 1, "history": history, "rng": _rng_state(generator),
                             "network": config.to_dict(), "classes": data.classes,
                             "mean": data.mean, "std": data.std, "augment": augment.to_dict(),
                             "data": {"dataset": data.manifest["dataset"], "split": data.manifest["split"]},
                             "schedule": {"kind": "cosine", "lr": train_cfg.lr, "lr_min": train_cfg.lr_min,
                                          "warmup_epochs": train_cfg.warmup_epochs,
                                          "momentum": train_cfg.momentum},
                             "recipe_sha256": recipe.section_sha256(*SEARCH_SECTIONS)},
                            checkpoint_path)
            write_csv(run_dir / HISTORY, history)
    seconds = time.perf_counter() - started
    write_json(run_dir / "search" / "genotype.json", config.genotype.to_dict())
    write_json(run_dir / "search" / "summary.json",
               {"mode": recipe.search.mode, "epochs": train_cfg.epochs, "params": params, "macs": macs,
                "final": history[-1] if history else {}, "seconds": seconds})
    return TrainOutcome(history, params, macs, seconds, checkpoint_path, start_epoch)

