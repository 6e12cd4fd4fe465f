"""The fraction learner: p, the share of each batch that gets the policy ops (docs/METHOD.md, "How much
augmentation").

In the `learned_fraction` form each sample of a batch gets the policy ops with probability p; the rest get
the base augmentation only. In expectation the batch gradient is g(p) = p g_aug + (1 - p) g_clean, so one SGD
step moves theta' by d theta' / dp = -lr (g_aug - g_clean), and for the loss on clean held-out images

    dL_val / dp = -lr g_val . (g_aug - g_clean),    g_val = grad L_val(theta').

Every `fraction_every` steps the loop measures g_aug and g_clean on the two parts of the same batch (one
forward pass, one extra backward pass), takes g_val at theta' on a clean batch of `fraction_data` images
(val: the split the search never trains on; train: un-augmented training images), and moves logit(p) by
`fraction_lr` times the cosine of g_val and (g_aug - g_clean): normalized like eta's step, so `fraction_lr`
is the largest change of logit(p) per hyper-step whatever the network. The `paper` form is p = 1, fixed.
The whole sequence lives here, behind the learner hooks: `share` (which samples get the policy, and
whether this step measures), `before_backward` (g_aug), `step` (d = g_aug - g_clean from the reduced
batch gradient), `after_theta_step` (g_val at theta' and the move of logit(p)). With the policy off, p
is the inert `NoFraction`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dha_pipeline.distributed import all_average, all_sum
from dha_pipeline.recipe import AugmentConfig
from dha_pipeline.search.hpo import Grads, flat_dot, held_in_gradients, optimizer_gradients
from dha_pipeline.search.learner import Learner, StepContext

LOGIT_BOUND = 6.0
"""logit(p) stays in [-6, 6]: p in [0.0025, 0.9975], so p can always come back."""
MIN_PART = 16
"""On a hyper-step each part of the batch has at least n // 16 (and at least one) samples."""


@dataclass(frozen=True)
class Share:
    """Which samples of a batch get the policy ops, and whether this step is a hyper-step of p."""

    augmented: torch.Tensor | None
    """Sorted indices (on the training device) of the samples that get the policy; None: every sample."""
    measured: bool = False

    def of(self, per_sample: torch.Tensor) -> torch.Tensor:
        """The entries of `per_sample` that belong to the augmented samples."""
        return per_sample if self.augmented is None else per_sample[self.augmented]


EVERY_SAMPLE = Share(None)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return min(max(math.log(p / (1 - p)), -LOGIT_BOUND), LOGIT_BOUND)


class FractionLearner(Learner):
    """p, learned by its one-step hypergradient on clean held-out images, or fixed at 1 (the paper's form)."""

    name = "p"
    log = "hparams"

    def __init__(self, settings: AugmentConfig, global_batch: int, device: torch.device | None = None) -> None:
        """`global_batch`: samples of one step over all ranks (what the per-sample means of g_aug and g_clean
        divide by)."""
        self.global_batch, self.device = global_batch, device or torch.device("cpu")
        self.share_of_step = EVERY_SAMPLE
        self.aug_grads: Grads | None = None
        self.form = settings.form
        self.learned = settings.form == "learned_fraction"
        self.logit = _logit(settings.fraction_start) if self.learned else math.inf
        self.lr = settings.fraction_lr
        self.every = settings.fraction_every
        self.data = settings.fraction_data
        self.cosine_sum = 0.0
        self.cosine_count = 0
        self.difference: Grads | None = None

    @property
    def value(self) -> float:
        """p, the probability that a sample gets the policy ops."""
        return 1.0 if not self.learned else 1.0 / (1.0 + math.exp(-self.logit))

    def share(self, n: int, step: int, generator: torch.Generator) -> Share:
        """This step's share of a batch of n: each sample gets the policy with probability p (every sample in
        the paper form), both parts non-empty on a hyper-step of p."""
        measured = self.due(step, n)
        parts = self.split(n, generator, measured)
        self.share_of_step = EVERY_SAMPLE if parts is None else Share(parts[0].to(self.device), measured)
        return self.share_of_step

    def before_backward(self, step: StepContext) -> None:
        """On a hyper-step: g_aug, the augmented part's summed loss backpropagated alone (graph kept)."""
        share = self.share_of_step
        self.aug_grads = (optimizer_gradients(share.of(step.per_sample_loss).sum(), step.theta, retain_graph=True)
                          if share.measured else None)

    def step(self, step: StepContext) -> None:
        """On a hyper-step: the augmented part's gradient and size summed over the global batch, and d kept."""
        if self.aug_grads is None:
            return
        assert self.share_of_step.augmented is not None
        n_augmented = torch.full((1,), float(len(self.share_of_step.augmented)), device=self.device)
        all_sum([*(grad for grad in self.aug_grads if grad is not None), n_augmented])
        self.remember(self.aug_grads, [p.grad for p in step.theta.flat_params()], int(n_augmented.item()),
                      self.global_batch)
        self.aug_grads = None

    def after_theta_step(self, step: StepContext) -> None:
        """On a hyper-step: g_val at theta' on clean images of `fraction_data`, and the move of logit(p)."""
        if self.difference is None:
            return
        held_out = held_in_gradients(step.network, step.theta, lambda: step.clean_loss(self.data))
        all_average(held_out)
        self.move(held_out)

    def due(self, step: int, batch_size: int) -> bool:
        """Whether step `step` is a hyper-step of p (both parts of the batch can then be non-empty)."""
        return self.learned and self.lr > 0 and batch_size >= 2 and step % self.every == 0

    def split(self, n: int, generator: torch.Generator, hyper_step: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(augmented, clean) sample indices of a batch of n (sorted CPU tensors); None in the paper form (all).

        Each sample is augmented with probability p; on a hyper-step both parts keep at least
        max(1, n // 16) samples (the samples nearest the threshold move), so g_aug - g_clean is measurable.
        """
        if not self.learned:
            return None
        draws = torch.rand(n, generator=generator, device=generator.device).cpu()
        count = int((draws < self.value).sum())
        if hyper_step:
            least = max(1, n // MIN_PART)
            count = min(max(count, least), n - least)
        order = torch.argsort(draws)
        return order[:count].sort().values, order[count:].sort().values

    @torch.no_grad()
    def remember(self, aug_grads: Sequence[torch.Tensor | None], batch_grads: Sequence[torch.Tensor | None],
                 n_aug: int, n: int) -> None:
        """Keep d = g_aug - g_clean (per-sample means) from the augmented part's summed gradients and the
        batch-mean gradients (the mean loss's p.grad, before clipping)."""
        n_clean = n - n_aug
        difference: Grads = []
        for aug, batch in zip(aug_grads, batch_grads, strict=True):
            if aug is None or batch is None:
                difference.append(None)
                continue
            clean = batch * n - aug
            difference.append(aug / n_aug - clean / n_clean)
        self.difference = difference

    @torch.no_grad()
    def move(self, held_out_grads: Sequence[torch.Tensor | None]) -> float:
        """Move logit(p) by fraction_lr * cos(g_val, g_aug - g_clean); returns the cosine."""
        if self.difference is None:
            raise RuntimeError("FractionLearner.move needs the gradients of the step: call remember first")
        pairs = [(g, d) for g, d in zip(held_out_grads, self.difference, strict=True)
                 if g is not None and d is not None]
        self.difference = None
        if not pairs:
            return 0.0
        device = pairs[0][0].device
        g, d = [g for g, _ in pairs], [d for _, d in pairs]
        g_d, g_g, d_d = torch.stack([flat_dot(g, d, device), flat_dot(g, g, device), flat_dot(d, d, device)]).tolist()
        denominator = math.sqrt(g_g * d_d)
        cosine = g_d / denominator if denominator > 0 else 0.0
        self.logit = min(max(self.logit + self.lr * cosine, -LOGIT_BOUND), LOGIT_BOUND)
        self.cosine_sum += cosine
        self.cosine_count += 1
        return cosine

    def history_fields(self) -> dict[str, Any]:
        """p at the end of the epoch."""
        return {"aug_fraction": self.value}

    def log_rows(self, epoch: int) -> list[dict[str, Any]]:
        """Its columns of the epoch's hparams.csv row: p and the mean cosine of the hyper-steps since the last
        row (then reset)."""
        mean = self.cosine_sum / self.cosine_count if self.cosine_count else float("nan")
        self.cosine_sum, self.cosine_count = 0.0, 0
        return [{"aug_fraction": self.value, "fraction_cosine": mean}]

    def report(self) -> dict[str, Any]:
        """What metadata and summaries show under `augment`: the form, p and whether it was learned."""
        return {"augment": {"form": self.form, "fraction": self.value, "learned": self.learned,
                            "measured_on": self.data if self.learned else None}}

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: logit(p) and the running cosine of the epoch."""
        return {"logit": self.logit, "cosine_sum": self.cosine_sum, "cosine_count": self.cosine_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        self.logit = float(state["logit"])
        self.cosine_sum, self.cosine_count = float(state["cosine_sum"]), int(state["cosine_count"])


class NoFraction(Learner):
    """p with the policy off: no sample gets policy ops, nothing is learned or logged."""

    name = "p"

    def share(self, n: int, step: int, generator: torch.Generator) -> Share:
        """Every sample (the inert policy leaves them as they are); draws nothing."""
        return EVERY_SAMPLE
