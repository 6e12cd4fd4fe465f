"""The one training loop of every variant (docs/METHOD.md, "One training step" and "Schedule").

A step reads top to bottom: batch -> base augmentation (crop, flip) -> p's share and the policy ops ->
Cutout -> forward -> backward -> gradient reduction -> each learner's step -> the theta step. The
learners (eta, tau, p, b; search/learner.py) are stepped, checkpointed, logged and compared across ranks
in loops over the four; a switched-off component is an inert learner. Each epoch ends with validation
and the learners' epoch end (b's recovery, freezing and the end of the search phase), logs and an atomic
checkpoint. In sequential mode the search phase runs NAS alone, then the derived network trains,
re-initialized, with DA and HPO.

This module owns the order of a step, the position in the data, the random stream and checkpoints; the
batches come from a training source (data/training.py). Only rank 0 writes files.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from dha_pipeline.augment.base import BaseAugment
from dha_pipeline.checkpoint import load_checkpoint, save_checkpoint
from dha_pipeline.data.cache import PreparedData
from dha_pipeline.data.device import Standardize, to_unit
from dha_pipeline.data.training import training_source
from dha_pipeline.device import resolve_device
from dha_pipeline.distributed import (agreed_float, all_average, all_sum, average_buffers, broadcast_module,
                                      gather_objects, is_main_process, rank, rank_seed, training_device, world_size)
from dha_pipeline.errors import DhaError
from dha_pipeline.latency import LatencyTable
from dha_pipeline.progress import EpochBars, Stopwatch, log_line
from dha_pipeline.recipe import SEARCH_SECTIONS, Recipe
from dha_pipeline.search import observe
from dha_pipeline.search.architecture import ArchitectureLearner, FixedArchitecture, child_cost
from dha_pipeline.search.average import WeightAverage
from dha_pipeline.search.batch_rule import batch_scaled
from dha_pipeline.search.class_weights import balanced_class_weights
from dha_pipeline.search.forward import TrainingForward
from dha_pipeline.search.fraction import FractionLearner, NoFraction
from dha_pipeline.search.hpo import HyperSGD, preserved_buffers
from dha_pipeline.search.hyper import HyperLearner
from dha_pipeline.search.learner import Learner, StepContext
from dha_pipeline.search.nonfinite import NonFiniteWatch
from dha_pipeline.search.phase import Phase
from dha_pipeline.search.policy import NoPolicy, PolicyLearner
from dha_pipeline.search.random_state import RandomState, restore_streams, stream_state
from dha_pipeline.search.tensorboard import TensorBoardLog, wanted
from dha_pipeline.spaces.base import DataShape, Genotype
from dha_pipeline.spaces.registry import get_space

CHECKPOINT_FORMAT = 6
BAR_COLUMNS = ("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} lr {task.fields[lr]:.2e} "
               "wd {task.fields[wd]:.1e} frozen {task.fields[frozen]}")


class SearchRun:
    """One run of the loop: the network, its learners, the position in the data, logs and checkpoints.
    `latency` is the latency table a latency budget is tested on (built by the stage)."""

    def __init__(self, recipe: Recipe, data: PreparedData, latency: LatencyTable | None = None) -> None:
        self.recipe, self.layout, self.data = recipe, recipe.layout, data
        self.space = get_space(recipe.model.space)
        self.shape = DataShape(len(data.classes), data.channels, data.image_size)
        self.device = training_device(resolve_device(recipe.device))
        self.rank, self.world = rank(), world_size()
        torch.manual_seed(recipe.seed)  # the network's initial weights: the same on every rank
        self.generator = torch.Generator().manual_seed(rank_seed(recipe.seed, self.rank))  # this rank's own draws
        self.components, self.mode = set(recipe.search.components), recipe.search.mode
        self.source = training_source(data, recipe, self.device, self.rank, self.world)
        self.plan = self.source.plan
        self.train, self.hpo, self.lr_rule = batch_scaled(recipe.train, recipe.hpo, self.plan.global_batch)
        self.class_weight = (balanced_class_weights(data.class_counts("train"), self.device)
                             if recipe.train.class_weights == "balanced" else None)
        self.standardize = Standardize(data.mean, data.std, self.device)
        augment = recipe.augment
        self.base_augment = BaseAugment(augment.crop_padding, augment.hflip and not self.source.flips, augment.cutout,
                                        augment.trivial_augment)
        if recipe.search.needs_latency_table and latency is None:
            raise ValueError("a latency budget or target is tested on a latency table: pass it "
                             "(latency.prepared_table)")
        self.latency = latency
        self.cost = child_cost(self.space, recipe.model, self.shape, latency)
        self.build(self.components if self.mode != "sequential" else {"nas"})
        torch.manual_seed(rank_seed(recipe.seed, self.rank))  # drop-path masks differ per rank from here on
        self.epoch = self.step_in_epoch = 0
        self.tensorboard: TensorBoardLog | None = None
        """The run's TensorBoard log (main process, search.tensorboard), opened by `run`."""
        self.stopped_at: tuple[int, int] | None = None
        """(epoch, steps run in it) where a minutes budget ended the run within an epoch."""
        self.non_finite = NonFiniteWatch(self.device)
        self.history: list[dict[str, Any]] = []
        self.logs = observe.empty_logs()
        self.clock = Stopwatch(agreed_float)
        self.settings_sha256 = recipe.section_sha256(*SEARCH_SECTIONS)

    def build(self, components: set[str], genotype: Genotype | None = None) -> None:
        """A fresh network, theta's optimizer and the learners of `components`: b searches a supernet under
        'nas', else trains the plain network of `genotype` (default: the recipe's known genotype)."""
        recipe, space, model, device = self.recipe, self.space, self.recipe.model, self.device
        if "nas" in components:
            self.arch: ArchitectureLearner | FixedArchitecture = ArchitectureLearner(
                space, model, self.shape, recipe.search, recipe.seed, device, self.cost, self.latency)
        else:
            name = space.default_genotype if model.genotype == "auto" else model.genotype
            genotype = genotype or space.known_genotype(name, model)
            self.arch = FixedArchitecture(space, model, self.shape, genotype, device)
        self.network = self.arch.network
        broadcast_module(self.network)
        train = self.train
        self.forward_train = TrainingForward(self.arch, train, device)
        self.theta = HyperSGD(self.network.parameters(), lr=train.lr, momentum=train.momentum,
                              weight_decay=train.weight_decay, grad_clip=train.grad_clip)
        da = "da" in components
        self.policy = PolicyLearner(recipe.augment, device, self.shape.image_size) if da else NoPolicy()
        self.fraction = FractionLearner(recipe.augment, self.plan.global_batch, device) if da else NoFraction()
        steps, minutes = self.plan.steps_per_epoch, recipe.search.budget_minutes
        self.hyper = HyperLearner(train, self.hpo, learned="hpo" in components, steps_per_epoch=steps,
                                  budget_minutes=minutes)
        self.average = (WeightAverage(self.network, train.ema_epochs, steps, lambda: self.arch.phase)
                        if train.ema_epochs > 0 else None)
        self.learners: tuple[Learner, ...] = (self.hyper, self.policy, self.fraction, self.arch,
                                              *([self.average] if self.average is not None else []))

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One joint step on this rank's part of the batch (uint8 NCHW on the device); (loss, accuracy) as
        device scalars."""
        index = self.epoch * self.plan.steps_per_epoch + self.step_in_epoch
        for learner in self.learners:
            learner.start_step(index)
        images = self.base_augment.before_policy(to_unit(images), self.generator)
        share = self.fraction.share(len(labels), index, self.generator)
        images, drawn = self.policy.augment(images, share, self.generator)
        images = self.base_augment.after_policy(images, self.generator)
        replayed = any(learner.replays(index) for learner in self.learners)
        inputs, drawn_state = self.standardize(images), RandomState.capture(self.device) if replayed else None
        logits, aux_logits = self.forward_train(inputs)
        per_sample = self.per_sample_loss(logits, aux_logits, labels)
        loss = per_sample.mean()
        step = StepContext(index, self.theta, self.network, self.clock.elapsed, per_sample, self.held_in_loss,
                           self.clean_loss, lambda: self.replay_loss(inputs, labels, drawn_state))
        self.zero_grad()
        objective = self.policy.objective(loss, drawn, share.of(per_sample))
        for learner in self.learners:
            learner.before_backward(step)
        objective.backward()
        bad = (~torch.isfinite(loss)).float()  # reduced with the gradients: a bad loss on any rank is seen by all
        all_average([*(p.grad for p in self.learned_parameters()), bad])
        self.non_finite.note(bad, index)
        for learner in self.learners:
            learner.step(step)
        self.theta.step()
        for learner in self.learners:
            learner.after_theta_step(step)
        return loss.detach(), (logits.argmax(1) == labels).float().mean()

    def per_sample_loss(self, logits: torch.Tensor, aux_logits: torch.Tensor | None,
                        labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy per sample (label smoothing as the recipe says), plus the weighted auxiliary loss."""
        recipe = self.recipe
        per_sample = F.cross_entropy(logits, labels, weight=self.class_weight, reduction="none",
                                     label_smoothing=recipe.train.label_smoothing)
        if aux_logits is not None:
            weight = recipe.model.auxiliary_loss_weight
            per_sample = per_sample + weight * F.cross_entropy(aux_logits, labels, weight=self.class_weight,
                                                               reduction="none")
        return per_sample

    def learned_parameters(self) -> list[torch.Tensor]:
        """Everything a backward pass gives gradients to: theta and the learners' parameters."""
        return [*self.network.parameters(), *(p for learner in self.learners for p in learner.parameters())]

    def zero_grad(self) -> None:
        """Drop the gradients of theta and of every learner."""
        self.theta.zero_grad(set_to_none=True)
        for learner in self.learners:
            learner.zero_grad()

    def held_in_loss(self) -> torch.Tensor:
        """The loss on a random training batch, base-augmented, at the current weights (eta's `held_in`)."""
        images, labels = self.source.random_batch("train", self.plan.local_batch, self.generator)
        logits = self.forward_train(self.standardize(self.base_augment(to_unit(images), self.generator)))[0]
        return F.cross_entropy(logits, labels, weight=self.class_weight)

    def replay_loss(self, inputs: torch.Tensor, labels: torch.Tensor, state: RandomState | None) -> torch.Tensor:
        """Per-sample losses of a step's standardized batch at the current weights, the step's random draws
        replayed from `state`; no gradients, buffers restored (tau's `val` signal)."""
        if state is None:
            raise RuntimeError("replay_loss called in a step no learner declared with `replays`")
        with torch.no_grad(), preserved_buffers(self.network), state.replayed():
            logits, aux_logits = self.forward_train(inputs)
            return self.per_sample_loss(logits, aux_logits, labels)

    def clean_loss(self, split: str) -> torch.Tensor:
        """The loss on a random un-augmented batch of `split` at the current weights (p's held-out loss; class-
        weighted as the training loss is)."""
        images, labels = self.source.random_batch(split, self.plan.local_batch, self.generator)
        return F.cross_entropy(self.forward_train(self.standardize(to_unit(images)))[0], labels,
                               weight=self.class_weight)

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean cross-entropy and top-1 of the current network (eval mode) on the whole val split (each rank
        scores its shard; the sums are reduced)."""
        self.network.eval()
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        for images, labels in self.source.val_batches(self.recipe.train.eval_batch_size):
            logits = self.forward_train(self.standardize(to_unit(images)))[0]
            loss += F.cross_entropy(logits, labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        all_sum([loss, correct])
        return float(loss) / self.source.val_size, float(correct) / self.source.val_size

    def end_of_epoch(self, train_loss: float, train_top1: float, seconds: float) -> None:
        """Validation, the learners' epoch end, the epoch's logs, and (sequential) the switch to training the
        derived network once the search phase has ended."""
        self.non_finite.check(self.plan.steps_per_epoch, self.layout.checkpoint)
        average_buffers(self.network)
        val_loss, val_top1 = self.validate()
        epoch, phase = self.epoch + 1, self.arch.phase
        row: dict[str, Any] = {"epoch": epoch, "phase": phase.value, "train_loss": train_loss,
                               "train_top1": train_top1, "val_loss": val_loss, "val_top1": val_top1}
        for learner in self.learners:
            row.update(learner.history_fields())
        for learner in self.learners:
            learner.end_of_epoch(self.network, epoch)
        observe.add_log_rows(self.logs, self.learners, epoch)
        self.history.append({**row, "seconds": seconds})
        self.epoch, self.step_in_epoch = epoch, 0
        if self.mode == "sequential" and phase is Phase.SEARCH and self.arch.phase is Phase.TRAIN:
            self.build(self.components - {"nas"}, self.arch.genotype())

    def frozen(self) -> str:
        """'frozen/all' decision points, '-' without a searched architecture."""
        frozen, points = self.arch.frozen_count()
        return f"{frozen}/{points}" if points else "-"

    def run(self) -> None:
        """Train to the end of the epoch budget (or the minutes budget), checkpointing as it goes."""
        train, every = self.recipe.train, self.recipe.train.checkpoint_every_steps
        minutes = self.recipe.search.budget_minutes
        if is_main_process() and self.epoch == 0 and self.step_in_epoch == 0:
            log_line(self.lr_rule.describe())
        if is_main_process() and self.tensorboard is None and wanted(self.recipe.search.tensorboard):
            purge = self.epoch + 1 if self.epoch else None  # a resumed run drops the events after its checkpoint
            self.tensorboard = TensorBoardLog(self.layout.tensorboard, purge_step=purge)
        with EpochBars(BAR_COLUMNS, loss=0.0, acc=0.0, lr=0.0, wd=0.0) as bars:
            while self.epoch < train.epochs and not self.clock.spent(minutes):
                self.clock.start()
                bars.start(f"epoch {self.epoch + 1}/{train.epochs} ({self.arch.phase.value})",
                           self.plan.steps_per_epoch, self.step_in_epoch, frozen=self.frozen())
                self.network.train()
                sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss and correct, sample-weighted
                samples = 0
                for images, labels in self.source.epoch(self.epoch, self.step_in_epoch):
                    loss, accuracy = self.train_step(images, labels)
                    self.step_in_epoch += 1
                    sums += torch.stack([loss.double(), accuracy.double()]) * len(labels)
                    samples += len(labels)
                    if bars.live:  # a host read per step, for the live bar only
                        bars.advance(loss=float(sums[0]) / samples, acc=float(sums[1]) / samples,
                                     lr=self.hyper.scheduled_lr, wd=self.hyper.weight_decay, frozen=self.frozen())
                    if every and self.step_in_epoch % every == 0 and self.step_in_epoch < self.plan.steps_per_epoch:
                        self.clock.lap()
                        self.save()
                    if minutes and self.step_in_epoch < self.plan.steps_per_epoch and self.budget_spent(minutes):
                        self.stopped_at = (self.epoch + 1, self.step_in_epoch)  # the epoch ends here, on time
                        break
                train_loss, train_top1 = self.epoch_means(sums, samples)
                self.end_of_epoch(train_loss, train_top1, self.clock.lap())
                bars.finish(f"epoch {self.epoch}/{train.epochs} val {self.history[-1]['val_top1']:.3f}",
                            frozen=self.frozen())
                self.save()
                if is_main_process():
                    log_line(observe.epoch_line(self.history[-1], train.epochs, self.frozen()))
                    observe.write_logs(self.layout, self.history, self.logs)
                    if self.tensorboard is not None:
                        frozen, points = self.arch.frozen_count()
                        self.tensorboard.epoch(self.history[-1], frozen if points else None)
                    if self.stopped_at is not None:
                        log_line(f"stopped at the {minutes:g}-minute budget after step {self.stopped_at[1]} of epoch "
                                 f"{self.stopped_at[0]}")

    def finish_average(self) -> dict[str, Any] | None:
        """With a weight average: validate it, and keep it in place of the last weights only when it is better
        on val (ties keep the last weights). What was measured and chosen; None without an average."""
        if self.average is None:
            return None
        report: dict[str, Any] = {"ema_epochs": self.average.ema_epochs, "decay": self.average.decay,
                                  "last_val_top1": self.history[-1]["val_top1"] if self.history else None,
                                  "val_top1": None, "used": False}
        if not self.average.started or not self.history:
            return report
        last = {key: value.clone() for key, value in self.network.state_dict().items()}
        self.network.load_state_dict(self.average.averaged_state())
        average_buffers(self.network)
        _, report["val_top1"] = self.validate()
        report["used"] = report["val_top1"] > report["last_val_top1"]
        if not report["used"]:
            self.network.load_state_dict(last)
        return report

    def budget_spent(self, minutes: float) -> bool:
        """After a step: has the run trained `minutes`? Every rank gets rank 0's clock, so all stop at the same
        step (a collective per step, paid only under a minutes budget)."""
        self.clock.lap()
        return self.clock.spent(minutes)

    def budget_report(self) -> dict[str, Any] | None:
        """Under a minutes budget: how long the run trained, and whether (and where) the budget ended it
        within an epoch; None without one."""
        minutes = self.recipe.search.budget_minutes
        if not minutes:
            return None
        epoch, step = self.stopped_at or (None, None)
        return {"minutes": minutes, "trained_seconds": self.clock.elapsed, "spent": self.clock.spent(minutes),
                "stopped_in_epoch": epoch, "stopped_after_step": step, "steps_per_epoch": self.plan.steps_per_epoch}

    def epoch_means(self, sums: torch.Tensor, samples: int) -> tuple[float, float]:
        """Mean training loss and top-1 over the samples of the steps run this epoch, on every rank (the
        per-rank sums weighted by batch size, summed over ranks)."""
        count = torch.full((), float(samples), dtype=torch.float64, device=self.device)
        loss_sum, correct_sum = sums[0].clone(), sums[1].clone()
        all_sum([loss_sum, correct_sum, count])
        return float(loss_sum) / max(float(count), 1.0), float(correct_sum) / max(float(count), 1.0)

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the run is: network, learners, position, logs."""
        return {"format": CHECKPOINT_FORMAT, "recipe_sha256": self.settings_sha256, "phase": self.arch.phase.value,
                "genotype": self.arch.genotype().to_dict(), "network": self.network.state_dict(),
                "theta": self.theta.state_dict(), "learners": self.learner_states(),
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "source": self.source.state_dict(),
                "elapsed": self.clock.elapsed, "history": self.history, "logs": self.logs}

    def learner_states(self) -> dict[str, Any]:
        """Each learner's state under its name."""
        return {learner.name: learner.state_dict() for learner in self.learners}

    def save(self) -> None:
        """Atomic checkpoint, written by the main process: the state every rank shares, and each rank's own
        random streams (collected from all ranks, so every rank must call this)."""
        self.non_finite.check(self.plan.steps_per_epoch, self.layout.checkpoint)
        average_buffers(self.network)
        streams = gather_objects(stream_state(self.generator))
        if is_main_process():
            save_checkpoint({**self.checkpoint_state(), "rng": streams}, self.layout.checkpoint)

    def restore(self) -> bool:
        """Continue from the checkpoint if one exists; False when there is none."""
        path = self.layout.checkpoint
        if not path.is_file():
            return False
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise DhaError(f"checkpoint '{path}' was written by another version of dha", "start over with --force")
        if state["recipe_sha256"] != self.settings_sha256:
            raise DhaError(f"checkpoint '{path}' was written by a different recipe",
                           "resume with the same recipe, or start over with --force")
        if len(state["rng"]) != self.world:
            raise DhaError(f"checkpoint '{path}' was written by {len(state['rng'])} process(es), not {self.world}",
                           f"resume with --nproc {len(state['rng'])} (or start over with --force)")
        if self.mode == "sequential" and Phase(state["phase"]) is Phase.TRAIN:
            self.build(self.components - {"nas"}, self.space.genotype_from_dict(state["genotype"]))
        for learner in self.learners:
            learner.load_state_dict(state["learners"][learner.name])
        self.network.load_state_dict(state["network"])
        self.theta.load_state_dict(state["theta"])
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self.source.load_state_dict(state["source"])
        self.clock.elapsed = float(state["elapsed"])
        self.history, self.logs = state["history"], state["logs"]
        restore_streams(self.generator, state["rng"][self.rank])
        return True

    def replica_parts(self) -> dict[str, Any]:
        """The learned state that must be identical on every rank, and this rank's own random stream."""
        return {"theta": self.network.state_dict(), **self.learner_states(),
                "genotype": self.arch.genotype().to_dict(), "own_stream": self.generator.get_state()}

    def hyperparameters(self) -> dict[str, Any]:
        """What the learners report: eta (and, with the policy on, p under `augment`), and how the starting lr
        followed the global batch (`lr_from_batch`)."""
        reports = {key: value for learner in self.learners for key, value in learner.report().items()}
        return {**reports, "lr_from_batch": self.lr_rule.as_dict()}
