"""The numeric parity gate: an exported model must compute what the torch model computes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Parity:
    """Agreement of an exported model with torch on real images."""

    max_abs_diff: float
    top1_agreement: float
    num_samples: int

    def passes(self, max_abs_diff: float, min_top1_agreement: float) -> bool:
        """Within both thresholds?"""
        return self.max_abs_diff <= max_abs_diff and self.top1_agreement >= min_top1_agreement

    def to_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return asdict(self)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Max absolute logit difference and top-1 agreement of `candidate` with `reference`.

    Arrays of different shapes (a wrong batch or class count) never agree.
    """
    if reference.shape != candidate.shape:
        return Parity(float("inf"), 0.0, int(len(reference)))
    diff = float(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)).max())
    agreement = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return Parity(diff, agreement, int(len(reference)))
