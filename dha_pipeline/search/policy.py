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
from dha_pipeline.recipe import AugmentConfig
from dha_pipeline.search.fraction import Share
from dha_pipeline.search.learner import Learner, StepContext

TOP_PAIRS_LOGGED = 5
TOP_PAIRS_REPORTED = 20


class PolicyLearner(Learner):
    """tau, learned adversarially: the pairs that make harder-than-average samples gain probability."""

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

    def augment(self, images: torch.Tensor, share: Share, generator: torch.Generator
                ) -> tuple[torch.Tensor, PolicySample | None]:
        """The batch (NCHW in [0, 1]) with the policy ops applied to the samples of `share`, and the pairs
        drawn for them (None when the share is empty)."""
        if share.augmented is None:
            sample = self.sample(len(images), generator)
            return self.apply(images, sample), sample
        if not len(share.augmented):
            return images, None
        sample = self.sample(len(share.augmented), generator)
        chosen = self.apply(images.index_select(0, share.augmented), sample)
        return images.index_copy(0, share.augmented, chosen), sample

    def objective(self, loss: torch.Tensor, sample: PolicySample | None, share_loss: torch.Tensor) -> torch.Tensor:
        """The training loss plus L_DA of the drawn pairs (given the augmented samples' losses)."""
        return loss if sample is None else loss + self.loss(sample, share_loss)

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
        """One Adam step on tau."""
        self.optimizer.step()

    @torch.no_grad()
    def entropy(self) -> float:
        """The policy's entropy in nats."""
        return float(self.policy.entropy())

    @torch.no_grad()
    def kl_to_start(self) -> float:
        """KL(P || start) in nats: how far the policy moved from where it began."""
        return float(self.policy.kl_to_start())

    def top_pairs(self, top: int = TOP_PAIRS_REPORTED) -> dict[str, float] | None:
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
        return {"policy": {"start": self.start, "kl_to_start": self.kl_to_start(), "entropy": self.entropy()}}

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

    def top_pairs(self, top: int = TOP_PAIRS_REPORTED) -> dict[str, float] | None:
        """No policy to report."""
        return None

    def heatmap(self) -> tuple[np.ndarray, list[str], str] | None:
        """No policy to plot."""
        return None
