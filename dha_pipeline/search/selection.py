"""Which supports the architecture keeps: the largest |x| under a cost target and caps on ops (docs/METHOD.md,
"Choosing the support").

Without a target or a cap, every decision point keeps its largest entries of |x| (`ista.select_support`).
With them, the points are chosen together: the supports that maximize the summed |x| of their kept entries
such that the child's cost lies in the target band [(1 - band) T, T] and no capped group keeps more capped
ops than its limit. This is a multiple-choice knapsack over the points, solved exactly by dynamic
programming over the cost in `COST_BINS` steps of the room under the target (so the band is met to within
one step per point) and over the capped count. The cost of a child is the sum of its kept candidates'
costs plus a fixed rest, which holds for parameters, MACs and a latency table's predictions; each
candidate's cost is measured once, by building the child that swaps it in (`candidate_costs`).

Where the unconstrained choice already satisfies the band and the caps it is kept unchanged; where no
support lies in the band, the costliest one under the target is kept, and where none is under it, the
cheapest.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dha_pipeline.search.ista import select_support
from dha_pipeline.spaces.base import DecisionPoint, OpCap, PointKey, Support

COST_BINS = 4000
"""Steps the room between the cheapest child and the target is cut into for the knapsack."""


@dataclass(frozen=True)
class Target:
    """A cost the child should reach without exceeding: `metric` ('params', 'macs' or 'latency_ms') within
    [(1 - band) * value, value]."""

    metric: str
    value: float
    band: float

    @property
    def low(self) -> float:
        """The lower end of the band."""
        return self.value * (1.0 - self.band)

    def holds(self, cost: float) -> bool:
        """Does a child of this cost lie in the band?"""
        return self.low <= cost <= self.value


@dataclass(frozen=True)
class CandidateCosts:
    """The cost of every candidate of every decision point (flat like x), relative to `reference`, whose
    child costs `reference_total`: a child's cost is reference_total + the sum over points of its kept
    candidates' costs minus the reference's."""

    per_point: dict[PointKey, torch.Tensor]
    reference: dict[PointKey, Support]
    reference_total: float

    def support_cost(self, key: PointKey, support: Support, num_ops: int) -> float:
        """The summed cost of one point's kept candidates."""
        costs = self.per_point[key]
        return float(sum(float(costs[edge * num_ops + op]) for edge, op in support))

    def total(self, supports: dict[PointKey, Support], points: list[DecisionPoint]) -> float:
        """The predicted cost of the child that keeps `supports`."""
        return self.reference_total + sum(
            self.support_cost(point.key, supports[point.key], len(point.ops))
            - self.support_cost(point.key, self.reference[point.key], len(point.ops)) for point in points)


def candidate_costs(points: list[DecisionPoint], reference: dict[PointKey, Support],
                    cost_of: Callable[[dict[PointKey, Support]], float]) -> CandidateCosts:
    """Each candidate's cost, measured as the change in the child's cost when it replaces the first kept
    candidate of its point in `reference` (one child built per candidate)."""
    reference_total = cost_of(reference)
    per_point: dict[PointKey, torch.Tensor] = {}
    for point in points:
        num_ops = len(point.ops)
        first, *rest = reference[point.key]
        costs = torch.zeros(point.size, dtype=torch.float64)
        for edge in range(point.num_inputs):
            for op in range(num_ops):
                if (edge, op) != first:
                    swapped = {**reference, point.key: [(edge, op), *rest]}
                    costs[edge * num_ops + op] = cost_of(swapped) - reference_total
        per_point[point.key] = costs
    return CandidateCosts(per_point, {key: list(support) for key, support in reference.items()}, reference_total)


@dataclass(frozen=True)
class _Option:
    """One support a point may keep, with what it scores, costs and counts against each cap."""

    support: Support
    score: float
    cost: float
    capped: tuple[int, ...]


class SupportSelector:
    """Chooses every point's support from its proposed x, under the recipe's target and the space's caps."""

    def __init__(self, points: list[DecisionPoint], caps: list[OpCap], costs: CandidateCosts | None = None,
                 target: Target | None = None) -> None:
        if (costs is None) != (target is None):
            raise ValueError("a cost target needs the candidates' costs, and they need a target")
        self.points, self.caps, self.costs, self.target = list(points), list(caps), costs, target

    @property
    def constrained(self) -> bool:
        """Is there anything beyond the largest |x| to respect?"""
        return bool(self.caps) or self.target is not None

    def select(self, proposals: dict[PointKey, torch.Tensor], kept: dict[PointKey, Support]) -> dict[PointKey, Support]:
        """The support of every point: chosen from `proposals[key]` where given, else `kept[key]` (frozen
        points, whose support no longer changes but still counts against the target and the caps)."""
        free = {point.key: select_support(proposals[point.key], point.num_inputs, len(point.ops), point.keep)
                for point in self.points if point.key in proposals}
        supports = {point.key: free[point.key] if point.key in free else kept[point.key] for point in self.points}
        if not self.constrained or self.satisfied(supports):
            return supports
        return self._knapsack(proposals, supports)

    def cost(self, supports: dict[PointKey, Support]) -> float | None:
        """The predicted cost of the child of `supports` (None without a target)."""
        return None if self.costs is None else self.costs.total(supports, self.points)

    def capped_counts(self, supports: dict[PointKey, Support]) -> list[int]:
        """How many capped ops each cap's group keeps."""
        return [sum(self._capped(point, supports[point.key], cap) for point in self.points) for cap in self.caps]

    def satisfied(self, supports: dict[PointKey, Support]) -> bool:
        """Do these supports meet every cap and (predicted) lie in the target band?"""
        counts = self.capped_counts(supports)
        if any(count > cap.limit for count, cap in zip(counts, self.caps, strict=True)):
            return False
        cost = self.cost(supports)
        return cost is None or self.target is None or self.target.holds(cost)

    @staticmethod
    def _capped(point: DecisionPoint, support: Support, cap: OpCap) -> int:
        """How many of the support's ops count against `cap` (0 outside the cap's group)."""
        return sum(point.ops[op] in cap.ops for _, op in support) if point.group == cap.group else 0

    def _options(self, point: DecisionPoint, x: torch.Tensor | None, kept: Support) -> list[_Option]:
        """Every support the point may keep (only `kept` when x is None), reduced to the best score per
        (cost, capped counts); the first of equal scores wins."""
        num_ops = len(point.ops)
        if x is None:
            supports, magnitude = [kept], None
        else:
            magnitude = x.detach().abs().double().reshape(point.num_inputs, num_ops).cpu().tolist()
            pairs = [(edge, op) for edge in range(point.num_inputs) for op in range(num_ops)]
            supports = [list(combo) for combo in itertools.combinations(pairs, point.keep)
                        if len({edge for edge, _ in combo}) == point.keep]
        best: dict[tuple[float, tuple[int, ...]], _Option] = {}
        for support in supports:
            score = 0.0 if magnitude is None else sum(magnitude[edge][op] for edge, op in support)
            cost = 0.0 if self.costs is None else self.costs.support_cost(point.key, support, num_ops)
            capped = tuple(self._capped(point, support, cap) for cap in self.caps)
            key = (round(cost, 9), capped)
            if key not in best or score > best[key].score:
                best[key] = _Option(support, score, cost, capped)
        return list(best.values())

    def _knapsack(self, proposals: dict[PointKey, torch.Tensor],
                  fallback: dict[PointKey, Support]) -> dict[PointKey, Support]:
        """The best supports under the caps and the band, by dynamic programming over (capped counts, cost
        bin): position k of a point's table stands for a child of predicted cost floor + k * width."""
        options = {point.key: self._options(point, proposals.get(point.key), fallback[point.key])
                   for point in self.points}
        cheapest = {key: min(option.cost for option in opts) for key, opts in options.items()}
        floor, room = 0.0, 0.0
        if self.costs is not None and self.target is not None:
            floor = self.costs.reference_total + sum(
                cheapest[point.key] - self.costs.support_cost(point.key, self.costs.reference[point.key],
                                                              len(point.ops)) for point in self.points)
            room = self.target.value - floor
            if room <= 0:  # nothing fits (or only the cheapest child does): the cheapest child
                return {key: min(opts, key=lambda o: (o.cost, -o.score)).support for key, opts in options.items()}
        bins = COST_BINS if room > 0 else 1
        width = room / (bins - 1) if bins > 1 else 1.0
        limits = tuple(cap.limit for cap in self.caps)
        start = tuple(0 for _ in limits)
        best = {start: np.full(bins, -math.inf)}
        best[start][0] = 0.0
        trace: list[tuple[PointKey, list[int], dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]]] = []
        for point in self.points:
            opts = options[point.key]
            steps = [0 if bins == 1 else int(round((o.cost - cheapest[point.key]) / width)) for o in opts]
            new: dict[tuple[int, ...], np.ndarray] = {}
            back: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
            for counts, scores in best.items():
                for index, (option, step) in enumerate(zip(opts, steps, strict=True)):
                    total = tuple(c + o for c, o in zip(counts, option.capped, strict=True))
                    if step >= bins or any(t > limit for t, limit in zip(total, limits, strict=True)):
                        continue
                    if total not in new:
                        new[total] = np.full(bins, -math.inf)
                        back[total] = (np.full(bins, -1), np.zeros((bins, len(limits)), dtype=np.int64))
                    shifted = np.full(bins, -math.inf)
                    shifted[step:] = scores[:bins - step] + option.score
                    better = shifted > new[total]
                    new[total][better] = shifted[better]
                    back[total][0][better] = index
                    back[total][1][better] = counts
            if not new:  # no support meets the caps (only a cap below what frozen points keep): unconstrained
                return fallback
            trace.append((point.key, steps, back))
            best = new
        counts, position = self._end_state(best, floor, width)
        supports: dict[PointKey, Support] = {}
        for key, steps, back in reversed(trace):
            index = int(back[counts][0][position])
            supports[key] = options[key][index].support
            counts = tuple(int(c) for c in back[counts][1][position])
            position -= steps[index]
        return {point.key: supports[point.key] for point in self.points}

    def _end_state(self, best: dict[tuple[int, ...], np.ndarray], floor: float,
                   width: float) -> tuple[tuple[int, ...], int]:
        """Where to trace back from: the best score in the band; else, of the costliest reachable children
        (under the target), the best score."""
        bins = len(next(iter(best.values())))
        in_band = np.ones(bins, dtype=bool)
        if self.target is not None and bins > 1:
            in_band = floor + np.arange(bins) * width >= self.target.low - 1e-9 * abs(self.target.value)
        if not any((in_band & np.isfinite(scores)).any() for scores in best.values()):
            top = max(int(np.flatnonzero(np.isfinite(scores)).max()) for scores in best.values()
                      if np.isfinite(scores).any())
            in_band = np.arange(bins) == top
        winner: tuple[float, tuple[int, ...], int] | None = None
        for counts, scores in sorted(best.items()):
            allowed = np.where(in_band, scores, -math.inf)
            position = int(np.argmax(allowed))
            if np.isfinite(allowed[position]) and (winner is None or allowed[position] > winner[0]):
                winner = (float(allowed[position]), counts, position)
        assert winner is not None
        return winner[1], winner[2]
