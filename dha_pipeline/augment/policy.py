"""The learned augmentation policy tau: a distribution over op choices (docs/METHOD.md, "Augmentation policy").

`AugmentPolicy` (the paper's form): every sample draws one transformation T_k = (op1, op2) out of K * K
ordered pairs, each op with its own magnitude in [0, M] and sign. `TrivialPolicy`
(augment/trivial_policy.py) draws one op out of K instead, at TrivialAugment Wide's strengths. tau is
trained adversarially through `da_loss` (eq. 2, importance-weighted): descending it raises the probability
of the choices that produce harder-than-average samples, while an entropy floor keeps the policy from
collapsing onto a few destructive choices and an optional KL term to the start keeps it where it began
unless the gradient keeps pointing away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dha_pipeline.augment.ops import AFFINE_MATRICES, MAX_MAGNITUDE, OP_NAMES, OPS, warp


@dataclass(frozen=True)
class PolicySample:
    """One draw of the policy for a batch of n samples; all tensors have n entries, on tau's device."""

    pair: torch.Tensor
    """The drawn choice: its index in tau."""
    op1: torch.Tensor
    magnitude1: torch.Tensor
    sign1: torch.Tensor
    op2: torch.Tensor | None = None
    """The second op of a pair; None where the policy draws one op per sample."""
    magnitude2: torch.Tensor | None = None
    sign2: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.pair.shape[0]


def apply_ops(op_names: Sequence[str], images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor,
              sign: torch.Tensor) -> torch.Tensor:
    """One op per sample (`op` indexes `op_names`), grouped: sort samples by op, run each op once on its
    contiguous group, scatter back.

    The geometric ops (rotate, shear, translate) of all groups share one affine warp: their per-sample
    matrices are stacked and applied in a single call.
    """
    op = op.to(images.device)
    order = torch.argsort(op, stable=True)
    counts = torch.bincount(op, minlength=len(op_names)).tolist()
    groups = zip(op_names, images.index_select(0, order).split(counts),
                 magnitude.to(images.device)[order].split(counts), sign.to(images.device)[order].split(counts))
    outputs: list[torch.Tensor] = []
    warped_slots: list[int] = []
    warp_inputs: list[torch.Tensor] = []
    warp_matrices: list[torch.Tensor] = []
    for name, group, mags, sgns in groups:
        if len(group) and name in AFFINE_MATRICES:
            warped_slots.append(len(outputs))
            warp_inputs.append(group)
            warp_matrices.append(AFFINE_MATRICES[name](group, mags, sgns))
        outputs.append(OPS[name](group, mags, sgns) if len(group) and name not in AFFINE_MATRICES else group)
    if warp_inputs:
        warped = warp(torch.cat(warp_inputs), torch.cat(warp_matrices)).split([len(g) for g in warp_inputs])
        for slot, result in zip(warped_slots, warped, strict=True):
            outputs[slot] = result
    return torch.empty_like(images).index_copy_(0, order, torch.cat(outputs))


def apply_ops_masked(op_names: Sequence[str], images: torch.Tensor, op: torch.Tensor, magnitude: torch.Tensor,
                     sign: torch.Tensor) -> torch.Tensor:
    """The same result as `apply_ops` with no host synchronization: every op runs on the whole batch and
    each sample keeps its own op's output (`torch.where`). Group sizes are never read back, so on an
    accelerator the step is queued without waiting; the price is each op's work on every sample, which
    on a GPU is cheaper than a round trip per op. The geometric ops share one warp whose per-sample
    matrix is the drawn op's."""
    op, magnitude, sign = op.to(images.device), magnitude.to(images.device), sign.to(images.device)
    out = images
    affine = [index for index, name in enumerate(op_names) if name in AFFINE_MATRICES]
    if affine:
        matrix = torch.eye(2, 3, device=images.device, dtype=images.dtype).repeat(len(images), 1, 1)
        for index in affine:
            drawn = (op == index).view(-1, 1, 1)
            matrix = torch.where(drawn, AFFINE_MATRICES[op_names[index]](images, magnitude, sign), matrix)
        is_affine = torch.isin(op, torch.tensor(affine, device=images.device)).view(-1, 1, 1, 1)
        out = torch.where(is_affine, warp(images, matrix), out)
    for index, name in enumerate(op_names):
        if name not in AFFINE_MATRICES:
            out = torch.where((op == index).view(-1, 1, 1, 1), OPS[name](images, magnitude, sign), out)
    return out


class AugmentPolicy(nn.Module):
    """Learnable distribution P = softmax(tau) over the K * K ordered op pairs, with batched sampling and apply.

    Pair index p stands for (op_names[p // K], op_names[p % K]): op1 runs first, then op2. tau starts at 0,
    the uniform distribution; `kl_weight` > 0 adds kl_weight * KL(P || uniform) to the loss, so the policy
    leaves its start only as far as a persistent gradient pays for.
    """

    def __init__(self, op_names: Sequence[str] = OP_NAMES, temperature: float = 2.0,
                 max_magnitude: float = MAX_MAGNITUDE, entropy_floor_fraction: float = 0.5,
                 floor_weight: float = 1.0, kl_weight: float = 0.0) -> None:
        super().__init__()
        unknown = [name for name in op_names if name not in OPS]
        if unknown:
            raise KeyError(f"unknown augmentation ops {unknown}; known: {', '.join(OPS)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.op_names: tuple[str, ...] = tuple(op_names)
        self.temperature = temperature
        self.max_magnitude = max_magnitude
        self.entropy_floor_fraction = entropy_floor_fraction
        self.floor_weight = floor_weight
        if kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")
        self.kl_weight = kl_weight
        self.tau = nn.Parameter(torch.zeros(self.num_choices))

    @property
    def num_ops(self) -> int:
        """K, the number of single ops."""
        return len(self.op_names)

    @property
    def num_choices(self) -> int:
        """How many choices tau holds: K * K ordered pairs."""
        return self.num_ops ** 2

    def choice_name(self, index: int) -> str:
        """The name of choice `index`: "op1+op2"."""
        return f"{self.op_names[index // self.num_ops]}+{self.op_names[index % self.num_ops]}"

    @property
    def max_entropy(self) -> float:
        """Entropy of the uniform policy (the start), log(number of choices) nats."""
        return math.log(self.num_choices)

    @property
    def entropy_floor(self) -> float:
        """Entropy (nats) below which `da_loss` adds a penalty."""
        return self.entropy_floor_fraction * self.max_entropy

    def probs(self) -> torch.Tensor:
        """P = softmax(tau), the untempered pair probabilities."""
        return F.softmax(self.tau, dim=0)

    def entropy(self) -> torch.Tensor:
        """Entropy of P in nats (differentiable)."""
        log_p = F.log_softmax(self.tau, dim=0)
        return -(log_p.exp() * log_p).sum()

    def kl_to_start(self) -> torch.Tensor:
        """KL(P || uniform) in nats (differentiable): how far the policy has moved from where it started."""
        return self.max_entropy - self.entropy()

    def draw_choices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n choice indices drawn from the tempered distribution by Gumbel-max, on tau's device."""
        gumbel = -torch.empty(n, self.num_choices, device=generator.device).exponential_(generator=generator).log()
        return (self.sampling_logits().detach() + gumbel.to(self.tau.device)).argmax(dim=1)

    def sample(self, n: int, generator: torch.Generator) -> PolicySample:
        """Draw n pairs from softmax(log P / T) by Gumbel-max, with magnitudes uniform in [0, M] and random signs.

        The paper writes softmax((log P + g) / T); its argmax does not depend on T, so the
        temperature is read as acting on the logits: argmax(log P / T + g) samples the tempered distribution
        softmax(log P / T), which T > 1 flattens so that low-probability pairs keep being explored.
        All randomness comes from `generator`, on its device; the results move to tau's device.
        """
        device = self.tau.device
        draw = {"generator": generator, "device": generator.device}
        pair = self.draw_choices(n, generator)
        magnitudes = (torch.rand(2, n, **draw) * self.max_magnitude).to(device)
        signs = (torch.randint(0, 2, (2, n), **draw).float() * 2 - 1).to(device)
        return PolicySample(pair=pair, op1=pair // self.num_ops, op2=pair % self.num_ops,
                            magnitude1=magnitudes[0], magnitude2=magnitudes[1], sign1=signs[0], sign2=signs[1])

    def apply(self, images: torch.Tensor, sample: PolicySample) -> torch.Tensor:
        """Augment an NCHW batch in [0, 1]: op1 then op2 per sample. On the CPU each op is called once on the
        samples that drew it (`apply_ops`); on an accelerator every op runs on the batch and samples keep
        their own (`apply_ops_masked`), so no group size is read back to the host."""
        apply = apply_ops if images.device.type == "cpu" else apply_ops_masked
        images = apply(self.op_names, images, sample.op1, sample.magnitude1, sample.sign1)
        if sample.op2 is None or sample.magnitude2 is None or sample.sign2 is None:
            return images
        return apply(self.op_names, images, sample.op2, sample.magnitude2, sample.sign2)

    def floor_penalty(self) -> torch.Tensor:
        """floor_weight * relu(entropy_floor - entropy): zero above the floor, pushes entropy up below it."""
        return self.floor_weight * F.relu(self.entropy_floor - self.entropy())

    def sampling_logits(self) -> torch.Tensor:
        """log P / T: the logits of the tempered distribution `sample` draws pairs from."""
        return F.log_softmax(self.tau, dim=0) / self.temperature

    def sampling_probs(self) -> torch.Tensor:
        """q = softmax(log P / T), the distribution `sample` draws pairs from."""
        return F.softmax(self.sampling_logits(), dim=0)

    def da_loss(self, sample: PolicySample, per_sample_loss: torch.Tensor) -> torch.Tensor:
        """-(1/n) sum_k p_k(tau) / q_k (l_k - mean l) + the entropy-floor penalty + kl_weight * KL(P || start);
        its gradient reaches only tau.

        Eq. 2's -(1/n) sum_k p_k l_k with two corrections, so that its expected gradient is exactly
        -grad E_{k~P}[l_k] (raise the pairs that are harder than average, and only those):
        - the importance weight 1/q_k (stopgrad) undoes that pairs are drawn from the tempered q, not P;
          without it the expected gradient of pair j is p_j (q_j l_j - sum_k q_k p_k l_k), which pushes
          whichever pair is already frequent further up almost regardless of its loss (rich get richer);
        - the batch-mean baseline leaves the expectation unchanged (sum_k grad p_k = 0) and keeps pairs
          that were not drawn from moving on noise.
        """
        p = self.probs()[sample.pair]
        q = self.sampling_probs().detach()[sample.pair]
        loss = per_sample_loss.detach()
        objective = -(p / q * (loss - loss.mean())).mean() + self.floor_penalty()
        return objective + self.kl_weight * self.kl_to_start() if self.kl_weight else objective

    def top_choices(self, k: int) -> list[tuple[str, float]]:
        """The k most probable choices as (name, probability), most probable first."""
        probs, index = self.probs().detach().cpu().topk(min(k, self.tau.numel()))
        return [(self.choice_name(i), p) for i, p in zip(index.tolist(), probs.tolist())]

    def as_dict(self, top: int = 20) -> dict[str, float]:
        """The `top` most probable choices as {name: probability}, for run logs and model metadata."""
        return dict(self.top_choices(top))

    def probability_grid(self) -> np.ndarray:
        """P as a grid for the heatmap: K x K for pairs (rows: first op)."""
        return self.probs().detach().cpu().numpy().reshape(self.num_ops, self.num_ops)

    def extra_repr(self) -> str:
        return (f"ops={self.num_ops}, temperature={self.temperature}, max_magnitude={self.max_magnitude}, "
                f"entropy_floor_fraction={self.entropy_floor_fraction}, floor_weight={self.floor_weight}, "
                f"kl_weight={self.kl_weight}")
