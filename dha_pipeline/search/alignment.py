"""How much each training sample of a step helps the clean held-out loss (docs/METHOD.md, "Augmentation
policy"): s_k = g_val . grad l_k, for every sample of the batch at once.

One SGD step on sample k changes the held-out loss by about -lr s_k, so a policy choice whose samples have
a higher s than the batch's average is one whose augmented images teach what the held-out images need.
s is the directional derivative of every per-sample loss along g_val: a central difference of the batch's
per-sample losses at theta +- eps g_val (two forward passes without gradients), with the step's own
random draws (drop-path masks) replayed so that only the weights differ, the BatchNorm statistics kept,
and theta restored exactly afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dha_pipeline.search.hpo import Grads, HyperSGD, flat_dot

STEP_SCALE = 0.01
"""eps = STEP_SCALE / |g_val|: theta moves by 0.01 in norm, the size DARTS' second-order step uses."""


@torch.no_grad()
def sample_alignment(theta: HyperSGD, direction: Grads, replay: Callable[[], torch.Tensor],
                     scale: float = STEP_SCALE) -> torch.Tensor | None:
    """direction . grad l_k for every sample k of the batch `replay` scores (per-sample losses at the current
    weights, the step's draws replayed), by a central difference; None when the direction is zero.

    `direction` is aligned with `theta.flat_params()` (None where a parameter has no entry). The weights
    are copied back afterwards, bit for bit.
    """
    pairs = [(p, d) for p, d in zip(theta.flat_params(), direction, strict=True) if d is not None]
    if not pairs:
        return None
    params, steps = [p for p, _ in pairs], [d.to(p.dtype) for p, d in pairs]
    norm = math.sqrt(float(flat_dot(steps, steps, params[0].device)))
    if not math.isfinite(norm) or norm == 0:
        return None
    eps = scale / norm
    saved = [p.detach().clone() for p in params]
    try:
        torch._foreach_add_(params, steps, alpha=eps)
        plus = replay()
        torch._foreach_add_(params, steps, alpha=-2 * eps)
        minus = replay()
    finally:
        torch._foreach_copy_(params, saved)
    return (plus.double() - minus.double()).float() / (2 * eps)
