"""The policy learner: tau, the augmentation policy (docs/METHOD.md, "Augmentation policy").

It owns the policy (a distribution over ordered pairs of the 14 ops, or over single ops starting at
TrivialAugment Wide: `augment.start`), its Adam optimizer, the
per-sample sampling of op pairs and magnitudes (for the samples p's share names), the L_DA objective
with its entropy floor, and its checkpoint part. With the policy off, tau is the inert `NoPolicy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dha_pipeline.augment.policy import AugmentPolicy, PolicySample
from dha_pipeline.augment.trivial_policy import TrivialPolicy
from dha_pipeline.distributed import all_average
from dha_pipeline.recipe import AugmentConfig
from dha_pipeline.search.alignment import sample_alignment
from dha_pipeline.search.fraction import Share
from dha_pipeline.search.hpo import held_in_gradients
from dha_pipeline.search.learner import Learner, StepContext

TOP_PAIRS_LOGGED = 5
TOP_CHOICES_REPORTED = 20


class PolicyLearner(Learner):
    """tau, learned adversarially (the choices that make harder-than-average samples gain probability) or,
    with `augment.signal = "val"`, by the clean held-out loss (the choices whose samples' gradients agree
    with the held-out gradient gain probability; search/alignment.py)."""

    name = "tau"
    log = "policy"

    def __init__(self, settings: AugmentConfig, device: torch.device, image_size: int) -> None:
        """`image_size`: the side of the training images (TrivialAugment Wide's translations are in pixels)."""
        self.policy = (TrivialPolicy(image_size, temperature=settings.temperature,
                                     entropy_floor_fraction=settings.entropy_floor, kl_weight=settings.kl_weight)
                       if settings.start == "trivial_wide" else
                       AugmentPolicy(temperature=settings.temperature, max_magnitude=settings.magnitude_max,
                                     entropy_floor_fraction=settings.entropy_floor, kl_weight=settings.kl_weight)
                       ).to(device)
        self.start = settings.start
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=settings.policy_lr)
        self.signal, self.every, self.data = settings.signal, settings.signal_every, settings.fraction_data
        self.moves = settings.policy_lr > 0
        self.drawn: tuple[PolicySample, torch.Tensor | None] | None = None

    def augment(self, images: torch.Tensor, share: Share, generator: torch.Generator
                ) -> tuple[torch.Tensor, PolicySample | None]:
        """The batch (NCHW in [0, 1]) with the policy ops applied to the samples of `share`, and the pairs
        drawn for them (None when the share is empty)."""
        self.drawn = None
        if share.augmented is None:
            sample = self.sample(len(images), generator)
            self.drawn = (sample, None)
            return self.apply(images, sample), sample
        if not len(share.augmented):
            return images, None
        sample = self.sample(len(share.augmented), generator)
        self.drawn = (sample, share.augmented)
        chosen = self.apply(images.index_select(0, share.augmented), sample)
        return images.index_copy(0, share.augmented, chosen), sample

    def objective(self, loss: torch.Tensor, sample: PolicySample | None, share_loss: torch.Tensor) -> torch.Tensor:
        """The training loss plus, with the adversarial signal, L_DA of the drawn pairs (given the augmented
        samples' losses)."""
        adversarial = sample is not None and self.signal == "adversarial"
        return loss + self.loss(sample, share_loss) if adversarial else loss

    def replays(self, index: int) -> bool:
        """The `val` signal replays the batch in the steps tau moves in."""
        return self.signal == "val" and self.moves and index % self.every == 0

    def after_theta_step(self, step: StepContext) -> None:
        """With the `val` signal, every `signal_every` steps: the alignment s_k of each augmented sample with the
        clean held-out gradient at theta', standardized over the batch, and one Adam step of tau on L_DA of
        s (above-average choices gain), with the entropy floor and the KL term to the start."""
        drawn, self.drawn = self.drawn, None
        if not self.replays(step.index):
            return
        held_out = held_in_gradients(step.network, step.theta, lambda: step.clean_loss(self.data))
        all_average(held_out)
        self.zero_grad()
        alignment = None if drawn is None else sample_alignment(step.theta, held_out, step.replay_loss)
        if drawn is not None and alignment is not None:
            sample, augmented = drawn
            score = alignment if augmented is None else alignment[augmented]
            spread = score.std() if len(score) > 1 else score.new_zeros(())
            score = (score - score.mean()) / spread.clamp_min(torch.finfo(score.dtype).tiny)
            with torch.enable_grad():
                self.loss(sample, score).backward()
        for parameter in self.parameters():  # a rank with nothing drawn still takes part in the reduction
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        all_average([parameter.grad for parameter in self.parameters()])
        self.optimizer.step()

    def sample(self, n: int, generator: torch.Generator) -> PolicySample:
        """One op pair, magnitudes and signs per sample of a batch of n."""
        return self.policy.sample(n, generator)

    def apply(self, images: torch.Tensor, sample: PolicySample) -> torch.Tensor:
        """The batch (NCHW in [0, 1]) with each sample's pair applied, op by op, batched per op."""
        return self.policy.apply(images, sample)

    def loss(self, sample: PolicySample, per_sample_loss: torch.Tensor) -> torch.Tensor:
        """L_DA of the drawn pairs given the network's per-sample losses; its gradient reaches only tau."""
        return self.policy.da_loss(sample, per_sample_loss)

    def parameters(self) -> list[torch.Tensor]:
        """tau."""
        return list(self.policy.parameters())

    def zero_grad(self) -> None:
        """Drop tau's gradient before a backward pass."""
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, step: StepContext | None = None) -> None:
        """One Adam step on tau from the training backward pass (the adversarial signal; with `val` tau has no
        gradient there and moves in `after_theta_step`)."""
        if self.signal == "adversarial":
            self.optimizer.step()

    @torch.no_grad()
    def entropy(self) -> float:
        """The policy's entropy in nats."""
        return float(self.policy.entropy())

    @torch.no_grad()
    def kl_to_start(self) -> float:
        """KL(P || start) in nats: how far the policy moved from where it began."""
        return float(self.policy.kl_to_start())

    def top_choices(self, top: int = TOP_CHOICES_REPORTED) -> dict[str, float] | None:
        """The `top` most probable choices as {"op1+op2" (or "op" for one op per sample): probability}."""
        return self.policy.as_dict(top)

    def heatmap(self) -> tuple[np.ndarray, list[str], str] | None:
        """What the policy heatmap plots: the probabilities (K x K pairs, or 1 x K ops), the op names, a title."""
        return (self.probabilities(), self.op_names,
                f"augmentation policy, start {self.start} (entropy {self.entropy():.2f} nats, "
                f"KL to start {self.kl_to_start():.3f})")

    def probabilities(self) -> np.ndarray:
        """The choice probabilities as a grid: K x K pairs (rows: first op), or one row of K ops."""
        return self.policy.probability_grid()

    @property
    def op_names(self) -> list[str]:
        """The K single ops, in the policy's order."""
        return list(self.policy.op_names)

    def history_fields(self) -> dict[str, Any]:
        """The policy's entropy and KL to its start at the end of the epoch."""
        return {"policy_entropy": self.entropy(), "policy_kl": self.kl_to_start()}

    def log_rows(self, epoch: int) -> list[dict[str, Any]]:
        """The epoch's policy.csv row: entropy, KL to the start and the most probable choices."""
        row: dict[str, Any] = {"epoch": epoch, "entropy": self.entropy(), "max_entropy": self.policy.max_entropy,
                               "kl_to_start": self.kl_to_start()}
        for rank, (name, prob) in enumerate(self.policy.top_choices(TOP_PAIRS_LOGGED), start=1):
            row[f"top{rank}"] = name
            row[f"top{rank}_p"] = prob
        return [row]

    def report(self) -> dict[str, Any]:
        """What summaries and metadata show under `policy`: where it started and how far it moved."""
        return {"policy": {"start": self.start, "signal": self.signal, "kl_to_start": self.kl_to_start(),
                           "entropy": self.entropy()}}

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint part: tau and its optimizer."""
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])


class NoPolicy(Learner):
    """tau with the policy off: images pass unchanged, the objective is the training loss."""

    name = "tau"

    def augment(self, images: torch.Tensor, share: Share, generator: torch.Generator
                ) -> tuple[torch.Tensor, PolicySample | None]:
        """The images as they are; nothing drawn."""
        return images, None

    def objective(self, loss: torch.Tensor, sample: PolicySample | None, share_loss: torch.Tensor) -> torch.Tensor:
        """The training loss."""
        return loss

    def top_choices(self, top: int = TOP_CHOICES_REPORTED) -> dict[str, float] | None:
        """No policy to report."""
        return None

    def heatmap(self) -> tuple[np.ndarray, list[str], str] | None:
        """No policy to plot."""
        return None
