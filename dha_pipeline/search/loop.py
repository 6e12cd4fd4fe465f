"""The one training loop of every variant (docs/METHOD.md, "One training step" and "Schedule").

A step reads top to bottom: batch -> base augmentation -> policy ops -> forward -> backward ->
gradient reduction -> each learner's step (eta, tau, b) -> the theta step. Each epoch ends with
validation, the architecture learner's recovery and freezing (search phase), logs and an atomic
checkpoint. The search phase ends when every decision point froze or at `search.search_epochs`;
the train phase trains on with the architecture fixed. In sequential mode the search phase runs
NAS alone and the train phase trains the derived network, re-initialized, with DA and HPO.

The learners own their state; this module owns the order of a step, the position in the data,
the random stream, logs and checkpoints. Splits stay on the device as uint8; the test split is
never read here. Only rank 0 writes files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import TextColumn
from torch import nn
from torch.nn import functional as F

from dha_pipeline.augment.base import BaseAugment
from dha_pipeline.data.cache import PreparedData
from dha_pipeline.data.device import Standardize, to_unit
from dha_pipeline.device import resolve_device
from dha_pipeline.distributed import (
    agreed_float,
    all_average,
    all_sum,
    average_buffers,
    barrier,
    broadcast_module,
    gather_objects,
    is_main_process,
    rank,
    rank_seed,
    training_device,
    world_size,
)
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.latency import prepared_table
from dha_pipeline.progress import interactive, log_line, progress_bar
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe
from dha_pipeline.search import observe
from dha_pipeline.search.architecture import ArchitectureLearner, ChildCost
from dha_pipeline.checkpoint import load_checkpoint, save_checkpoint
from dha_pipeline.search.feed import Feed
from dha_pipeline.search.fraction import FractionLearner
from dha_pipeline.search.hpo import HyperSGD, held_in_gradients, optimizer_gradients
from dha_pipeline.search.hyper import HyperLearner
from dha_pipeline.search.phase import Phase
from dha_pipeline.search.policy import PolicyLearner
from dha_pipeline.search.replicas import compare, fingerprints
from dha_pipeline.search.result import SearchResult
from dha_pipeline.spaces.base import DataShape, Genotype
from dha_pipeline.spaces.cost import count_macs, count_params
from dha_pipeline.spaces.registry import get_space

CHECKPOINT_FORMAT = 4


@dataclass
class SearchOutcome:
    """What a finished run reports."""

    history: list[dict[str, Any]]
    genotype: Genotype
    params: int
    macs: int
    seconds: float
    checkpoint: Path
    resumed_from: str | None
    plots: list[Path]


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


class SearchRun:
    """One run of the loop: the network, its learners, the position in the data, logs and checkpoints."""

    def __init__(self, recipe: Recipe, data: PreparedData) -> None:
        self.recipe = recipe
        self.layout = recipe.layout
        self.data = data
        self.space = get_space(recipe.model.space)
        self.shape = DataShape(len(data.classes), data.channels, data.image_size)
        self.device = training_device(resolve_device(recipe.device))
        self.rank, self.world = rank(), world_size()
        torch.manual_seed(recipe.seed)  # the network's initial weights: the same on every rank
        self.generator = torch.Generator().manual_seed(rank_seed(recipe.seed, self.rank))  # this rank's own draws
        self.components = set(recipe.search.components)
        self.mode = recipe.search.mode
        self.phase = Phase.SEARCH if "nas" in self.components else Phase.TRAIN
        self.feed = Feed(data, recipe, self.device, self.rank, self.world)
        self.standardize = Standardize(data.mean, data.std, self.device)
        hflip = recipe.augment.hflip and not self.feed.streamed  # streamed images were flipped by the workers
        self.base_augment = BaseAugment(recipe.augment.crop_padding, hflip, recipe.augment.cutout,
                                        recipe.augment.trivial_augment)
        self.global_batch, self.batch_size = self.feed.global_batch, self.feed.local_batch
        self.steps_per_epoch = self.feed.steps_per_epoch
        self.latency = prepared_table(recipe, self.space, self.shape) if recipe.search.max_latency_ms else None
        self.build(self.active_components())
        torch.manual_seed(rank_seed(recipe.seed, self.rank))  # drop-path masks differ per rank from here on
        self.epoch = 0
        self.step_in_epoch = 0
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.history: list[dict[str, Any]] = []
        self.logs = observe.empty_logs()
        self.elapsed = 0.0
        self.settings_sha256 = recipe.section_sha256(*SEARCH_SECTIONS)

    # ---- what trains ---------------------------------------------------------------------------
    def active_components(self) -> set[str]:
        """Components active now: sequential mode runs NAS alone, then DA and HPO on the derived net."""
        if self.mode != "sequential":
            return self.components
        return {"nas"} if self.phase is Phase.SEARCH else self.components - {"nas"}

    def build(self, components: set[str], genotype: Genotype | None = None) -> None:
        """A fresh network, theta's optimizer and learners for `components`: a supernet with an
        architecture learner under 'nas', else the plain network of `genotype` (default: the recipe's
        known genotype)."""
        recipe, space = self.recipe, self.space
        self.arch: ArchitectureLearner | None = None
        if "nas" in components:
            self.network: nn.Module = space.supernet(recipe.model, self.shape).to(self.device)
            self.arch = ArchitectureLearner(space, space.decision_points(recipe.model), recipe.search, recipe.seed,
                                            self.device, self.child_cost)
            self.genotype_trained: Genotype | None = None
        else:
            name = space.default_genotype if recipe.model.genotype == "auto" else recipe.model.genotype
            self.genotype_trained = genotype or space.known_genotype(name, recipe.model)
            self.network = space.network(recipe.model, self.shape, self.genotype_trained).to(self.device)
        broadcast_module(self.network)
        train = recipe.train
        self.channels_last = train.channels_last == "on" or (train.channels_last == "auto"
                                                             and self.device.type == "cuda")
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)
        self.compiled_forward = (torch.compile(self.network.forward_train, mode=train.compile, dynamic=False)
                                 if train.compile != "off" and self.arch is None else None)
        self.theta = HyperSGD(self.network.parameters(), lr=train.lr, momentum=train.momentum,
                              weight_decay=train.weight_decay, grad_clip=train.grad_clip)
        self.policy = PolicyLearner(recipe.augment, self.device) if "da" in components else None
        self.fraction = FractionLearner(recipe.augment) if "da" in components else None
        self.hyper = HyperLearner(train, recipe.hpo, learned="hpo" in components,
                                  steps_per_epoch=self.steps_per_epoch,
                                  budget_minutes=recipe.search.budget_minutes)

    def child_cost(self, genotype: Genotype) -> ChildCost:
        """Parameters, MACs and (with a latency budget) predicted latency of the plain network of `genotype`:
        what the budget is tested on."""
        network = self.space.network(self.recipe.model, self.shape, genotype)
        latency = (None if self.latency is None
                   else self.latency.predict(self.space.latency_blocks(self.recipe.model, self.shape, genotype)))
        return ChildCost(count_params(network), count_macs(network, self.shape.channels, self.shape.image_size),
                         latency)

    def genotype(self) -> Genotype:
        """The current architecture."""
        if self.arch is not None:
            return self.arch.genotype()
        assert self.genotype_trained is not None
        return self.genotype_trained

    def forward_train(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and auxiliary logits (fp32) of the current network (a supernet runs its active candidates),
        under bf16 autocast and in channels_last as the recipe says; a fixed network's training forward
        runs compiled when `train.compile` asks."""
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.recipe.train.precision == "bf16"):
            if self.arch is not None:
                logits, aux = self.network.forward_train(inputs, self.arch.weights())
            elif self.compiled_forward is not None and self.network.training:
                logits, aux = self.compiled_forward(inputs)
            else:
                logits, aux = self.network.forward_train(inputs)
        return logits.float(), None if aux is None else aux.float()

    def learned_parameters(self) -> list[torch.Tensor]:
        """Everything a backward pass gives gradients to: theta, b (search phase) and tau."""
        params = list(self.network.parameters())
        if self.arch is not None and self.phase is Phase.SEARCH:
            params += self.arch.parameters()
        if self.policy is not None:
            params += self.policy.parameters()
        return params

    # ---- one step ------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One joint step on this rank's part of the batch (uint8 NCHW images on the device); returns (loss,
        accuracy) as device scalars."""
        images = self.base_augment(to_unit(images), self.generator)
        step = self.epoch * self.steps_per_epoch + self.step_in_epoch
        sample, augmented, measure = None, None, False
        if self.policy is not None and self.fraction is not None:
            measure = self.fraction.due(step, len(labels))
            parts = self.fraction.split(len(labels), self.generator, measure)
            if parts is None:  # the paper's form: every sample gets the policy ops
                sample = self.policy.sample(len(labels), self.generator)
                images = self.policy.apply(images, sample)
            else:
                augmented = parts[0].to(self.device)
                if len(augmented):
                    sample = self.policy.sample(len(augmented), self.generator)
                    images = images.index_copy(0, augmented,
                                               self.policy.apply(images.index_select(0, augmented), sample))
        logits, aux_logits = self.forward_train(self.standardize(images))
        per_sample = self.per_sample_loss(logits, aux_logits, labels)
        loss = per_sample.mean()
        self.zero_grad()
        augmented_loss = per_sample if augmented is None else per_sample[augmented]
        objective = loss if sample is None else loss + self.policy.loss(sample, augmented_loss)
        aug_grads = None
        if measure:  # g_aug: the augmented part's summed loss, backpropagated alone first
            aug_grads = optimizer_gradients(augmented_loss.sum(), self.theta, retain_graph=True)
        objective.backward()
        bad = (~torch.isfinite(loss)).float()  # reduced with the gradients: a bad loss on any rank is seen by all
        all_average([*(p.grad for p in self.learned_parameters()), bad])
        self.note_bad_step(bad, step)
        if aug_grads is not None:  # the augmented part's gradient and size, summed over the global batch
            n_augmented = torch.full((1,), float(len(augmented)), device=self.device)
            all_sum([*(grad for grad in aug_grads if grad is not None), n_augmented])
            self.fraction.remember(aug_grads, [p.grad for p in self.theta.flat_params()], int(n_augmented.item()),
                                   self.global_batch)
        self.hyper.step(self.theta, step, self.elapsed,
                        (self.network, self.held_in_loss) if self.hyper.estimator == "held_in" else None)
        if self.policy is not None:
            self.policy.step()
        if self.arch is not None and self.phase is Phase.SEARCH:
            self.arch.step()
        self.theta.step()
        if aug_grads is not None:  # g_val at theta', on clean held-out images
            held_out = held_in_gradients(self.network, self.theta, self.clean_loss)
            all_average(held_out)
            self.fraction.step(held_out)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return loss.detach(), accuracy

    def note_bad_step(self, bad: torch.Tensor, step: int) -> None:
        """Remember (on the device, no host read) the first step whose loss was not finite on some rank."""
        first_bad = torch.where((bad > 0) & (self.first_bad_step < 0), step, self.first_bad_step)
        self.first_bad_step = first_bad

    def check_finite(self) -> None:
        """Stop (on every rank alike) when a step's loss was not finite; called before every checkpoint and
        validation, so the last checkpoint on disk is always a good one."""
        first_bad = int(self.first_bad_step)
        if first_bad < 0:
            return
        epoch, step = divmod(first_bad, self.steps_per_epoch)
        raise DhaError(f"training loss became non-finite at epoch {epoch + 1}, step {step + 1}; the last good "
                       f"checkpoint is kept in '{self.layout.checkpoint}'",
                       "lower train.lr (or hpo.lr_high) and keep train.grad_clip > 0")

    def clean_loss(self) -> torch.Tensor:
        """The loss p's hypergradient is measured on: a clean (un-augmented) batch of `augment.fraction_data`."""
        assert self.fraction is not None
        images, labels = self.feed.random_batch(self.fraction.data, self.batch_size, self.generator)
        return F.cross_entropy(self.forward_train(self.standardize(to_unit(images)))[0], labels)

    def per_sample_loss(self, logits: torch.Tensor, aux_logits: torch.Tensor | None,
                        labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per sample (label smoothing as the recipe says), plus the weighted auxiliary loss."""
        recipe = self.recipe
        per_sample = F.cross_entropy(logits, labels, reduction="none", label_smoothing=recipe.train.label_smoothing)
        if aux_logits is not None:
            per_sample = per_sample + recipe.model.auxiliary_weight * F.cross_entropy(aux_logits, labels,
                                                                                      reduction="none")
        return per_sample

    def zero_grad(self) -> None:
        """Drop the gradients of theta and of every learner."""
        self.theta.zero_grad(set_to_none=True)
        if self.arch is not None:
            self.arch.zero_grad()
        if self.policy is not None:
            self.policy.zero_grad()

    def held_in_loss(self) -> torch.Tensor:
        """The `held_in` estimator's loss: a batch drawn from the training set, base-augmented, at theta'."""
        images, labels = self.feed.random_batch("train", self.batch_size, self.generator)
        inputs = self.standardize(self.base_augment(to_unit(images), self.generator))
        return F.cross_entropy(self.forward_train(inputs)[0], labels)

    # ---- epochs ----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean cross-entropy and top-1 of the current network (eval mode) on the whole val split (each rank
        scores its shard; the sums are reduced)."""
        self.network.eval()
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        for images, labels in self.feed.val.batches(self.recipe.train.eval_batch_size):
            logits = self.forward_train(self.standardize(to_unit(images)))[0]
            loss += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        all_sum([loss, correct])
        count = self.feed.val_size
        return float(loss) / count, float(correct) / count

    def end_of_epoch(self, train_loss: float, train_top1: float, seconds: float) -> None:
        """Validation, per-epoch logs, recovery and freezing (search phase), phase change, next data order."""
        self.check_finite()
        average_buffers(self.network)
        val_loss, val_top1 = self.validate()
        epoch = self.epoch + 1
        row: dict[str, Any] = {"epoch": epoch, "phase": self.phase.value, "train_loss": train_loss,
                               "train_top1": train_top1, "val_loss": val_loss, "val_top1": val_top1,
                               "lr": self.hyper.lr, "weight_decay": self.hyper.weight_decay,
                               "scheduled_lr": self.hyper.scheduled_lr}
        if self.policy is not None:
            row["policy_entropy"] = self.policy.entropy()
            self.logs["policy"].append(self.policy.log_row(epoch))
        hparams = self.hyper.log_row(epoch)
        if self.fraction is not None:
            hparams.update(self.fraction.log_row())
            row["aug_fraction"] = hparams["aug_fraction"]
        self.logs["hparams"].append(hparams)
        if self.phase is Phase.SEARCH and self.arch is not None:
            self.logs["arch"] += self.arch.end_of_epoch(self.network, epoch)
        row["seconds"] = seconds
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self.feed.next_epoch()
        self.maybe_end_search_phase()

    def maybe_end_search_phase(self) -> None:
        """The search phase ends when every decision point froze or at the search-epoch cap."""
        if self.phase is not Phase.SEARCH or self.arch is None:
            return
        if not self.arch.all_frozen() and self.epoch < self.recipe.search.search_epochs:
            return
        self.arch.finish(self.network)
        self.phase = Phase.TRAIN
        if self.mode == "sequential":
            self.build(self.active_components(), self.arch.genotype())

    def frozen_count(self) -> str:
        """'frozen/all' decision points, '-' without an architecture learner."""
        if self.arch is None:
            return "-"
        frozen, total = self.arch.frozen_count()
        return f"{frozen}/{total}"

    def epoch_line(self) -> str:
        """The last epoch as one whole line: what a log file keeps of it."""
        row = self.history[-1]
        entropy = f" H {row['policy_entropy']:.2f}" if "policy_entropy" in row else ""
        entropy += f" p {row['aug_fraction']:.3f}" if "aug_fraction" in row else ""
        return (f"epoch {row['epoch']}/{self.recipe.train.epochs} {row['phase']} loss {row['train_loss']:.4f} "
                f"train {row['train_top1']:.4f} val {row['val_top1']:.4f} (loss {row['val_loss']:.4f}) "
                f"lr {row['scheduled_lr']:.3e} (base {row['lr']:.3e}) wd {row['weight_decay']:.2e}{entropy} "
                f"frozen {self.frozen_count()} {row['seconds']:.1f} s")

    # ---- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        """Train to the end of the epoch budget (or the minutes budget), checkpointing as it goes."""
        train, search = self.recipe.train, self.recipe.search
        every = train.checkpoint_every_steps
        columns = TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} lr {task.fields[lr]:.2e} "
                             "wd {task.fields[wd]:.1e} frozen {task.fields[frozen]}")
        live = interactive()
        with progress_bar(columns) as progress:
            while self.epoch < train.epochs:
                if search.budget_minutes and self.elapsed >= 60 * search.budget_minutes:
                    break
                started = time.perf_counter()
                epoch_seconds = 0.0
                task = progress.add_task(f"epoch {self.epoch + 1}/{train.epochs} ({self.phase.value})",
                                         total=self.steps_per_epoch, completed=self.step_in_epoch,
                                         loss=0.0, acc=0.0, lr=0.0, wd=0.0, frozen=self.frozen_count())
                self.network.train()
                loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
                correct_sum = torch.zeros((), dtype=torch.float64, device=self.device)
                samples = 0
                for images, labels in self.feed.epoch(self.epoch, self.step_in_epoch):
                    loss, accuracy = self.train_step(images, labels)
                    self.step_in_epoch += 1
                    loss_sum += loss.double() * len(labels)
                    correct_sum += accuracy.double() * len(labels)
                    samples += len(labels)
                    if live:  # a host read per step, for the live bar only
                        progress.update(task, advance=1, loss=float(loss_sum) / samples,
                                        acc=float(correct_sum) / samples,
                                        lr=self.hyper.scheduled_lr,
                                        wd=self.hyper.weight_decay, frozen=self.frozen_count())
                    if every and self.step_in_epoch % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                        lap = time.perf_counter() - started
                        self.elapsed = agreed_float(self.elapsed + lap)
                        epoch_seconds += lap
                        started = time.perf_counter()
                        self.save()
                train_loss, train_top1 = self.epoch_means(loss_sum, correct_sum, samples)
                lap = time.perf_counter() - started
                self.end_of_epoch(train_loss, train_top1, epoch_seconds + lap)
                self.elapsed = agreed_float(self.elapsed + lap)
                progress.update(task, description=f"epoch {self.epoch}/{train.epochs} val "
                                                  f"{self.history[-1]['val_top1']:.3f}", frozen=self.frozen_count())
                self.save()
                if is_main_process():
                    log_line(self.epoch_line())
                    observe.write_logs(self.layout, self.history, self.logs)

    def epoch_means(self, loss_sum: torch.Tensor, correct_sum: torch.Tensor, samples: int) -> tuple[float, float]:
        """Mean training loss and top-1 over the samples of the steps run this epoch, on every rank (the
        per-rank sums weighted by batch size, summed over ranks)."""
        count = torch.full((), float(samples), dtype=torch.float64, device=self.device)
        all_sum([loss_sum, correct_sum, count])
        return float(loss_sum) / max(float(count), 1.0), float(correct_sum) / max(float(count), 1.0)

    # ---- checkpoints -----------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run is: network, learners, position, RNGs, logs."""
        def part(learner: Any) -> Any:
            return None if learner is None else learner.state_dict()

        return {"format": CHECKPOINT_FORMAT, "recipe_sha256": self.settings_sha256, "phase": self.phase.value,
                "genotype": self.genotype().to_dict(), "network": self.network.state_dict(),
                "theta": self.theta.state_dict(), "arch": part(self.arch), "policy": part(self.policy),
                "fraction": part(self.fraction),
                "hyper": self.hyper.state_dict(), "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "feed": self.feed.state_dict(), "elapsed": self.elapsed,
                "history": self.history, "logs": self.logs}

    def save(self) -> None:
        """Atomic checkpoint, written by the main process: the state every rank shares, and each rank's own
        random streams (collected from all ranks, so every rank must call this)."""
        self.check_finite()
        average_buffers(self.network)
        streams = gather_objects(_rng_state(self.generator))
        if is_main_process():
            save_checkpoint({**self.checkpoint_state(), "rng": streams}, self.layout.checkpoint)

    def restore(self) -> bool:
        """Continue from the checkpoint if one exists; False when there is none."""
        path = self.layout.checkpoint
        if not path.is_file():
            return False
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise DhaError(f"checkpoint '{path}' was written by another version of dha",
                           "start over with --force")
        if state["recipe_sha256"] != self.settings_sha256:
            raise DhaError(f"checkpoint '{path}' was written by a different recipe",
                           "resume with the same recipe, or start over with --force")
        if len(state["rng"]) != self.world:
            raise DhaError(f"checkpoint '{path}' was written by {len(state['rng'])} process(es), not {self.world}",
                           f"resume with --nproc {len(state['rng'])} (or start over with --force)")
        self.phase = Phase(state["phase"])
        if self.phase is Phase.TRAIN and self.mode == "sequential":
            self.build(self.active_components(), self.space.genotype_from_dict(state["genotype"]))
        if self.arch is not None:
            self.arch.load_state_dict(state["arch"], self.network)
        self.network.load_state_dict(state["network"])
        self.theta.load_state_dict(state["theta"])
        if self.policy is not None:
            self.policy.load_state_dict(state["policy"])
        if self.fraction is not None:
            self.fraction.load_state_dict(state["fraction"])
        self.hyper.load_state_dict(state["hyper"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.feed.load_state_dict(state["feed"])
        self.elapsed = float(state["elapsed"])
        self.history, self.logs = state["history"], state["logs"]
        _restore_rng(self.generator, state["rng"][self.rank])
        return True

    def replica_parts(self) -> dict[str, Any]:
        """The learned state that must be identical on every rank, and this rank's own random stream."""
        def part(learner: Any) -> Any:
            return None if learner is None else learner.state_dict()

        return {"theta": self.network.state_dict(), "b": None if self.arch is None else self.arch.parameters(),
                "tau": None if self.policy is None else self.policy.parameters(), "eta": self.hyper.state_dict(),
                "p": part(self.fraction), "genotype": self.genotype().to_dict(),
                "own_stream": self.generator.get_state()}

    def hyperparameters(self) -> dict[str, Any]:
        """eta as the hyper learner reports it, and p (the augmented share) when the policy is on."""
        report = self.hyper.report()
        if self.fraction is not None:
            report["augment"] = self.fraction.report()
        return report

    # ---- the result --------------------------------------------------------------------------------
    def result(self) -> SearchResult:
        """What derive reads: the trained network, the architecture weights, and what was learned."""
        data = self.data
        return SearchResult(
            name=self.recipe.name, space=self.space.name, kind="supernet" if self.arch is not None else "network",
            network=self.network.config.to_dict(),
            state_dict={k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            arch_weights=None if self.arch is None else SearchResult.pack_weights(self.arch.weights()),
            genotype=self.genotype().to_dict(), hyperparameters=self.hyperparameters(),
            da_policy=None if self.policy is None else self.policy.top_pairs(),
            base_augment=self.base_augment.to_dict(), components=sorted(self.components), mode=self.mode,
            epochs=self.epoch, final_val_top1=self.history[-1]["val_top1"] if self.history else None,
            classes=list(data.classes), mean=list(data.mean), std=list(data.std), channels=data.channels,
            image_size=data.image_size,
            data={"dataset": data.manifest["dataset"], "split": data.manifest["split"], "eval_crop": data.eval_crop},
            recipe_sha256=self.settings_sha256)


def run_search(recipe: Recipe, data: PreparedData, *, resume: bool = False) -> SearchOutcome:
    """Run (or continue) the recipe's search/training; writes only under runs/<name>/."""
    run = SearchRun(recipe, data)
    resumed_from = None
    if resume and run.restore():
        resumed_from = f"epoch {run.epoch + 1}, step {run.step_in_epoch}"
    run.run()
    genotype = run.genotype()
    params, macs, latency_ms = run.child_cost(genotype)
    layout = run.layout
    replicas = compare(gather_objects(fingerprints(run.replica_parts()))) if run.world > 1 else None
    bad_files = sorted({path for paths in gather_objects(run.feed.bad_files) for path in paths})
    plots = observe.write_plots(layout, run.history, run.logs, run.policy, run.space,
                                run.space.decision_points(run.recipe.model), genotype.to_dict())
    if is_main_process():
        if replicas is not None and not replicas["shared_parts_agree"]:
            log_line(f"warning: the {run.world} processes ended with different {', '.join(replicas['disagree'])}; "
                     f"rank 0's model is kept (see 'replicas' in {layout.summary})")
        if bad_files:
            log_line(f"warning: {len(bad_files)} unreadable training image(s) were skipped (data.skip_bad), "
                     f"first '{bad_files[0]}'; all are listed under 'bad_files' in {layout.summary}")
        result = run.result()
        result.save(layout.result)
        write_json(layout.genotype, result.genotype)
        write_json(layout.summary,
                   {"space": result.space, "mode": run.mode, "components": result.components, "epochs": run.epoch,
                    "phase": run.phase.value, "params": params, "macs": macs,
                    **({} if latency_ms is None else {"predicted_latency_ms": latency_ms}),
                    **({} if replicas is None else {"replicas": replicas}),
                    **({"bad_files": bad_files} if bad_files else {}), "genotype": result.genotype,
                    "hyperparameters": result.hyperparameters, "da_policy": result.da_policy,
                    "final": run.history[-1] if run.history else {}, "seconds": run.elapsed})
    barrier()  # the other ranks read what rank 0 just wrote
    return SearchOutcome(run.history, genotype, params, macs, run.elapsed, layout.checkpoint, resumed_from, plots)
