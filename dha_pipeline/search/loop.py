"""The one training loop of every variant (ALGORITHM.md sections 1, 2, 6).

Per step: draw a batch; base augmentation; the learned policy's op pairs (da);
forward the current network (supernet under the ISTA weights while the
architecture is searched); backward once for theta and b; a hyper-step on
(lr, wd) from the hypergradient (hpo); a policy step on tau (da); an Adam step
on b (nas); the momentum-SGD step on theta. Per epoch: FISTA recovery, budget
test and freezing (phase 1), validation, logs and an atomic checkpoint.

Phase 1 ends when every node froze or at `search.search_epochs`; phase 2 trains
on with the architecture fixed. In sequential mode phase 1 runs NAS alone and
phase 2 trains the derived network, re-initialized, with DA and HPO.
Data stay on the device as uint8; the test split is never touched here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import TextColumn
from torch.nn import functional as F

from dha_pipeline.augment.base import BaseAugment
from dha_pipeline.data.cache import PreparedData
from dha_pipeline.device import resolve_device
from dha_pipeline.distributed import is_main_process
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.metrics import RunningMean, write_csv
from dha_pipeline.preprocess import PIXEL_SCALE, standardize
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe
from dha_pipeline.search import observe
from dha_pipeline.search.checkpoint import load_checkpoint, save_checkpoint
from dha_pipeline.search.parts import SearchParts, build_parts, network_config, supernet_config
from dha_pipeline.search.schedule import learning_rate, schedule_factor
from dha_pipeline.spaces.cost import count_macs, count_params
from dha_pipeline.spaces.darts import DartsNetwork
from dha_pipeline.spaces.genotype import Genotype
from dha_pipeline.spaces.operations import PRIMITIVES

CHECKPOINT = Path("checkpoints") / "last.pt"
HISTORY = "history.csv"
FISTA_MAX_ITER = 10_000


@dataclass
class SearchOutcome:
    """What a finished run reports."""

    history: list[dict[str, float]]
    genotype: Genotype
    params: int
    macs: int
    seconds: float
    checkpoint: Path
    resumed_from: str | None
    plots: list[Path]


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
def evaluate_split(parts: SearchParts, images: DeviceImages, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and top-1 of the current network (eval mode) on a whole split."""
    parts.model.eval()
    loss, correct = 0.0, 0
    for start in range(0, len(images), batch_size):
        index = slice(start, start + batch_size)
        logits = parts.forward(images.normalize(images.unit(index)))
        loss += F.cross_entropy(logits, images.y[index], reduction="sum").item()
        correct += (logits.argmax(1) == images.y[index]).sum().item()
    return loss / len(images), correct / len(images)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(generator: torch.Generator, state: dict[str, Any]) -> None:
    """Set the generators back; RNG states must be CPU byte tensors whatever device loaded the checkpoint."""
    generator.set_state(state["data"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])


def _genotype_cost(recipe: Recipe, data: PreparedData, genotype: Genotype) -> tuple[int, int]:
    """Parameters and MACs of the plain network a genotype derives (the budget test's target network)."""
    network = DartsNetwork(network_config(recipe, data, genotype))
    return count_params(network), count_macs(network, data.channels, data.image_size)


class SearchRun:
    """One run of the loop: its parts, position, logs and checkpointing."""

    def __init__(self, recipe: Recipe, data: PreparedData) -> None:
        self.recipe = recipe
        self.data = data
        self.device = resolve_device(recipe.device)
        torch.manual_seed(recipe.seed)
        self.generator = torch.Generator().manual_seed(recipe.seed)
        self.components = set(recipe.search.components)
        self.mode = recipe.search.mode
        self.phase = 1 if "nas" in self.components else 2
        self.parts = build_parts(recipe, data, self.device, self.phase_components())
        self.augment = BaseAugment(recipe.augment.crop_padding, recipe.augment.hflip, recipe.augment.cutout)
        self.train_images = DeviceImages(data.x["train"], data.y["train"], data.mean, data.std, self.device)
        self.val_images = DeviceImages(data.x["val"], data.y["val"], data.mean, data.std, self.device)
        self.batch_size = min(recipe.train.batch_size, len(self.train_images))
        self.steps_per_epoch = len(self.train_images) // self.batch_size
        self.epoch = 0
        self.step_in_epoch = 0
        self.order = torch.randperm(len(self.train_images), generator=self.generator)
        self.history: list[dict[str, float]] = []
        self.logs: dict[str, list[dict[str, Any]]] = {"policy": [], "hparams": [], "arch": []}
        self.elapsed = 0.0
        self.run_dir = recipe.run_dir
        self.checkpoint_path = self.run_dir / CHECKPOINT
        self.settings_sha256 = recipe.section_sha256(*SEARCH_SECTIONS)

    def phase_components(self) -> set[str]:
        """Components active now: sequential mode runs NAS alone, then DA and HPO on the derived net."""
        if self.mode != "sequential":
            return self.components
        return {"nas"} if self.phase == 1 else self.components - {"nas"}

    # ---- one step -------------------------------------------------------------------------------
    def current_lr(self) -> float:
        """Base lr (learned under hpo, else the recipe's) times the schedule's factor now."""
        parts, train = self.parts, self.recipe.train
        step = self.epoch * self.steps_per_epoch + self.step_in_epoch
        if self.recipe.search.budget_minutes > 0:
            budget_steps = self.elapsed / (60 * self.recipe.search.budget_minutes) * train.epochs * self.steps_per_epoch
            step = max(step, int(budget_steps))
        if parts.hyper is None:
            return learning_rate(train, step, self.steps_per_epoch)
        return parts.hyper.params.lr * schedule_factor(train, step, self.steps_per_epoch)

    def train_step(self, index: torch.Tensor) -> tuple[float, float]:
        """One joint step on the samples at `index`; returns (loss, accuracy)."""
        parts, recipe = self.parts, self.recipe
        labels = self.train_images.y[index]
        images = self.augment(self.train_images.unit(index), self.generator)
        sample = None
        if parts.policy is not None:
            sample = parts.policy.sample(len(index), self.generator)
            images = parts.policy.apply(images, sample)
        logits, aux_logits = parts.forward_train(self.train_images.normalize(images))
        per_sample = F.cross_entropy(logits, labels, reduction="none", label_smoothing=recipe.train.label_smoothing)
        if aux_logits is not None:
            per_sample = per_sample + recipe.model.auxiliary_weight * F.cross_entropy(aux_logits, labels,
                                                                                      reduction="none")
        loss = per_sample.mean()
        if not torch.isfinite(loss):
            raise DhaError(f"training loss became {loss.item()} at epoch {self.epoch + 1}; the last good "
                           f"checkpoint is kept in '{self.checkpoint_path}'",
                           "lower train.lr (or hpo.lr_high) and keep train.grad_clip > 0")
        parts.optimizer.zero_grad(set_to_none=True)
        if parts.arch_optimizer is not None:
            parts.arch_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if parts.hyper is not None and parts.hyper.estimator == "next_batch":
            parts.hyper.step(parts.optimizer, parts.hyper.gradients(parts.optimizer))
        if parts.policy is not None and sample is not None:
            parts.policy_optimizer.zero_grad(set_to_none=True)
            parts.policy.da_loss(sample, per_sample).backward()
            parts.policy_optimizer.step()
        if parts.arch_optimizer is not None and self.phase == 1:
            parts.arch_optimizer.step()
        lr = self.current_lr()
        weight_decay = parts.hyper.params.wd if parts.hyper is not None else recipe.train.weight_decay
        for group in parts.optimizer.param_groups:
            group["lr"], group["weight_decay"] = lr, weight_decay
        parts.optimizer.step()
        if parts.hyper is not None and parts.hyper.estimator == "held_in":
            self.held_in_hyper_step()
        accuracy = (logits.argmax(1) == labels).float().mean().item()
        return loss.item(), accuracy

    def held_in_hyper_step(self) -> None:
        """`held_in` estimator: the training loss at theta' on a batch drawn from the training set."""
        parts = self.parts
        index = torch.randint(0, len(self.train_images), (self.batch_size,), generator=self.generator)
        index = index.to(self.device)

        def closure() -> torch.Tensor:
            inputs = self.train_images.normalize(self.augment(self.train_images.unit(index), self.generator))
            return F.cross_entropy(parts.forward_train(inputs)[0], self.train_images.y[index])

        parts.hyper.step(parts.optimizer, parts.hyper.gradients(parts.optimizer, parts.model, closure))

    # ---- epoch boundaries -------------------------------------------------------------------------
    def end_of_search_epoch(self) -> None:
        """FISTA recovery, the budget test on the real target network, freezing (phase 1 only)."""
        arch, search = self.parts.arch, self.recipe.search
        proposals = arch.recover(search.sparsity, max_iter=FISTA_MAX_ITER)
        accept = True
        if search.max_params or search.max_macs:
            params, macs = _genotype_cost(self.recipe, self.data, arch.genotype(proposals))
            accept = (not search.max_params or params <= search.max_params) and (
                not search.max_macs or macs <= search.max_macs)
        arch.commit(proposals, accept)
        for cell_type, node_index in arch.update_freezing(search.freeze_threshold):
            node = dict(arch.nodes())[(cell_type, node_index)]
            self.parts.model.enable_affine(cell_type, node_index, node.support)
        x_by_cell = {cell_type: [node.x_last.detach().cpu().numpy() for node in arch.cells[cell_type]]
                     for cell_type in arch.cells}
        frozen = {cell_type: [node.is_frozen for node in arch.cells[cell_type]] for cell_type in arch.cells}
        self.logs["arch"] += observe.arch_rows(self.epoch + 1, x_by_cell, frozen)

    def maybe_end_phase_one(self) -> None:
        """Phase 1 ends when every node froze or at the search-epoch cap."""
        arch = self.parts.arch
        if self.phase != 1 or arch is None:
            return
        if not arch.all_frozen() and self.epoch < self.recipe.search.search_epochs:
            return
        for key, node in arch.nodes():
            if not node.is_frozen:
                node.freeze()
                self.parts.model.enable_affine(key[0], key[1], node.support)
        self.phase = 2
        if self.mode == "sequential":
            genotype = arch.genotype()
            self.parts = build_parts(self.recipe, self.data, self.device, self.phase_components(), genotype)

    def frozen_count(self) -> str:
        """'frozen/total' nodes for the progress bar."""
        arch = self.parts.arch
        if arch is None:
            return "-"
        nodes = arch.nodes()
        return f"{sum(node.is_frozen for _, node in nodes)}/{len(nodes)}"

    def genotype(self) -> Genotype:
        """The current architecture."""
        if self.parts.arch is not None:
            return self.parts.arch.genotype()
        return self.parts.model.config.genotype

    # ---- checkpoints ------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run is."""
        parts = self.parts
        network = (supernet_config(self.recipe, self.data).to_dict() if parts.is_supernet
                   else parts.model.config.to_dict())
        return {"kind": "supernet" if parts.is_supernet else "network", "network": network,
                "parts": parts.state_dict(), "phase": self.phase, "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "order": self.order, "elapsed": self.elapsed,
                "history": self.history, "logs": self.logs, "rng": _rng_state(self.generator),
                "classes": self.data.classes, "mean": self.data.mean, "std": self.data.std,
                "augment": self.augment.to_dict(), "mode": self.mode, "components": sorted(self.components),
                "data": {"dataset": self.data.manifest["dataset"], "split": self.data.manifest["split"]},
                "schedule": {"kind": "cosine", "lr": self.recipe.train.lr, "lr_min": self.recipe.train.lr_min,
                             "warmup_epochs": self.recipe.train.warmup_epochs,
                             "momentum": self.recipe.train.momentum},
                "hyperparameters": self.hyperparameters(), "genotype": self.genotype().to_dict(),
                "da_policy": self.parts.policy.as_dict() if self.parts.policy is not None else None,
                "recipe_sha256": self.settings_sha256}

    def save(self) -> None:
        """Atomic checkpoint (main process only)."""
        if is_main_process():
            save_checkpoint(self.checkpoint_state(), self.checkpoint_path)

    def restore(self) -> bool:
        """Continue from the checkpoint if one exists; False when there is none."""
        if not self.checkpoint_path.is_file():
            return False
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        if state.get("recipe_sha256") != self.settings_sha256:
            raise DhaError(f"checkpoint '{self.checkpoint_path}' was written by a different recipe",
                           "resume with the same recipe, or start over with --force")
        self.phase = int(state["phase"])
        if self.phase == 2 and self.mode == "sequential":
            self.parts = build_parts(self.recipe, self.data, self.device, self.phase_components(),
                                     Genotype.from_dict(state["genotype"]))
        self.parts.load_state_dict(state["parts"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.order = state["order"].cpu()
        self.elapsed = float(state["elapsed"])
        self.history, self.logs = state["history"], state["logs"]
        _restore_rng(self.generator, state["rng"])
        return True

    @torch.no_grad()
    def policy_entropy(self) -> str:
        """The policy's entropy in nats, for the progress bar ('-' without a policy)."""
        return "-" if self.parts.policy is None else f"{float(self.parts.policy.entropy()):.2f}"

    def hyperparameters(self) -> dict[str, float]:
        """The learning rate and weight decay in use now."""
        group = self.parts.optimizer.param_groups[0]
        return {"lr": float(group["lr"]), "weight_decay": float(group["weight_decay"])}

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> None:
        """Train to the end of the epoch budget (or the minutes budget), checkpointing as it goes."""
        train, search = self.recipe.train, self.recipe.search
        every = train.checkpoint_every_steps
        columns = TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} lr {task.fields[lr]:.2e} "
                             "wd {task.fields[wd]:.1e} H {task.fields[entropy]} frozen {task.fields[frozen]}")
        with progress_bar(columns) as progress:
            while self.epoch < train.epochs:
                if search.budget_minutes and self.elapsed >= 60 * search.budget_minutes:
                    break
                started = time.perf_counter()
                task = progress.add_task(f"epoch {self.epoch + 1}/{train.epochs} (phase {self.phase})",
                                         total=self.steps_per_epoch, completed=self.step_in_epoch,
                                         loss=0.0, acc=0.0, lr=0.0, wd=0.0, entropy="-", frozen=self.frozen_count())
                self.parts.model.train()
                loss_mean, acc_mean = RunningMean(), RunningMean()
                order = self.order.to(self.device)
                while self.step_in_epoch < self.steps_per_epoch:
                    start = self.step_in_epoch * self.batch_size
                    loss, accuracy = self.train_step(order[start:start + self.batch_size])
                    self.step_in_epoch += 1
                    loss_mean.update(loss, self.batch_size)
                    acc_mean.update(accuracy, self.batch_size)
                    hyper = self.hyperparameters()
                    entropy = self.policy_entropy()
                    progress.update(task, advance=1, loss=loss_mean.mean, acc=acc_mean.mean, lr=hyper["lr"],
                                    wd=hyper["weight_decay"], entropy=entropy, frozen=self.frozen_count())
                    if every and self.step_in_epoch % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                        self.elapsed += time.perf_counter() - started
                        started = time.perf_counter()
                        self.save()
                self.end_of_epoch(loss_mean.mean, acc_mean.mean)
                self.elapsed += time.perf_counter() - started
                progress.update(task, description=f"epoch {self.epoch}/{train.epochs} val "
                                                  f"{self.history[-1]['val_top1']:.3f}", frozen=self.frozen_count())
                self.save()
                if is_main_process():
                    write_csv(self.run_dir / HISTORY, self.history)
                    observe.write_logs(self.run_dir / "search", self.logs)

    def end_of_epoch(self, train_loss: float, train_top1: float) -> None:
        """Validation, per-epoch logs, recovery/freezing, phase change, next data order."""
        val_loss, val_top1 = evaluate_split(self.parts, self.val_images, self.recipe.train.eval_batch_size)
        hyper = self.hyperparameters()
        row = {"epoch": self.epoch + 1, "phase": self.phase, "train_loss": train_loss, "train_top1": train_top1,
               "val_loss": val_loss, "val_top1": val_top1, "lr": hyper["lr"],
               "weight_decay": hyper["weight_decay"]}
        if self.parts.policy is not None:
            row["policy_entropy"] = float(self.policy_entropy())
            self.logs["policy"].append(observe.policy_row(self.epoch + 1, self.parts.policy))
        self.history.append(row)
        self.logs["hparams"].append({"epoch": self.epoch + 1, **hyper})
        if self.phase == 1 and self.parts.arch is not None:
            self.end_of_search_epoch()
        self.epoch += 1
        self.step_in_epoch = 0
        self.order = torch.randperm(len(self.train_images), generator=self.generator)
        self.maybe_end_phase_one()


def run_search(recipe: Recipe, data: PreparedData, *, resume: bool = False) -> SearchOutcome:
    """Run (or continue) the recipe's search/training; writes only under runs/<name>/."""
    run = SearchRun(recipe, data)
    resumed_from = None
    if resume and run.restore():
        resumed_from = f"epoch {run.epoch + 1}, step {run.step_in_epoch}"
    run.run()
    genotype = run.genotype()
    child = DartsNetwork(network_config(recipe, data, genotype))
    params = count_params(child)
    macs = count_macs(child, data.channels, data.image_size)
    plots = observe.write_plots(run.run_dir, run.history, run.logs, run.parts.policy, genotype.to_dict(),
                                list(PRIMITIVES))
    if is_main_process():
        write_json(run.run_dir / "search" / "summary.json",
                   {"mode": run.mode, "components": sorted(run.components), "epochs": run.epoch,
                    "phase": run.phase, "params": params, "macs": macs, "genotype": genotype.to_dict(),
                    "hyperparameters": run.hyperparameters(),
                    "da_policy": run.parts.policy.as_dict() if run.parts.policy is not None else None,
                    "final": run.history[-1] if run.history else {}, "seconds": run.elapsed})
    return SearchOutcome(run.history, genotype, params, macs, run.elapsed, run.checkpoint_path, resumed_from, plots)
