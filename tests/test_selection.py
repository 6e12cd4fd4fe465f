"""Choosing supports under a cost target and op caps; the warm-up; starting at the known design."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from dha_pipeline.recipe import SearchConfig
from dha_pipeline.search.architecture import ArchitectureLearner, child_cost, metric_cost
from dha_pipeline.search.ista import select_support
from dha_pipeline.search.phase import Phase
from dha_pipeline.search.selection import CandidateCosts, SupportSelector, Target, candidate_costs
from dha_pipeline.spaces.base import DataShape, DecisionPoint, OpCap
from dha_pipeline.spaces.darts.genotype import DARTS_V1, DARTS_V2
from dha_pipeline.spaces.darts.operations import PRIMITIVES
from dha_pipeline.spaces.darts.settings import DartsSettings
from dha_pipeline.spaces.darts.space import PARAMETER_FREE
from dha_pipeline.spaces.darts.space import SPACE as DARTS
from dha_pipeline.spaces.mobilenet.settings import MobileNetSettings
from dha_pipeline.spaces.mobilenet.space import SPACE as MOBILENET

MODEL = DartsSettings(init_channels=4, layers=3)
SHAPE = DataShape(num_classes=3, channels=3, image_size=8)
POINTS = DARTS.decision_points(MODEL)
SMALL_MOBILE = MobileNetSettings(width_mult=0.25, stage_channels=[16, 24], stage_depths=[2, 2],
                                 stage_strides=[1, 2], head_channels=32, stem="small")


def random_proposals(seed: int, points: list[DecisionPoint] = POINTS) -> dict[Any, torch.Tensor]:
    """Sparse-ish proposals: a few nonzero entries per point, as FISTA returns."""
    generator = torch.Generator().manual_seed(seed)
    proposals = {}
    for point in points:
        x = torch.randn(point.size, generator=generator)
        x[torch.rand(point.size, generator=generator) < 0.6] = 0.0
        proposals[point.key] = x
    return proposals


def largest(proposals: dict[Any, torch.Tensor], points: list[DecisionPoint] = POINTS) -> dict[Any, list]:
    return {point.key: select_support(proposals[point.key], point.num_inputs, len(point.ops), point.keep)
            for point in points}


def score(supports: dict[Any, list], proposals: dict[Any, torch.Tensor], points: list[DecisionPoint]) -> float:
    return sum(float(proposals[p.key].abs()[edge * len(p.ops) + op]) for p in points for edge, op in supports[p.key])


@pytest.fixture(scope="module")
def darts_params() -> tuple[CandidateCosts, Any]:
    measure = metric_cost(DARTS, MODEL, SHAPE, None, "params")
    reference = DARTS.supports(DARTS_V2)
    return candidate_costs(POINTS, reference, lambda s: measure(DARTS.genotype(s))), measure


@pytest.mark.parametrize("space, model, metric", [(DARTS, MODEL, "params"), (MOBILENET, SMALL_MOBILE, "macs")])
def test_a_childs_cost_is_the_sum_of_its_candidates_costs(space: Any, model: Any, metric: str) -> None:
    points = space.decision_points(model)
    measure = metric_cost(space, model, SHAPE, None, metric)
    reference = space.supports(space.known_genotype("DARTS_V1" if space is DARTS else "MBV2", model))
    costs = candidate_costs(points, reference, lambda s: measure(space.genotype(s)))
    for seed in range(4):
        supports = largest(random_proposals(seed, points), points)
        assert costs.total(supports, points) == pytest.approx(measure(space.genotype(supports)), rel=1e-9)


def test_without_target_or_caps_the_largest_entries_are_kept() -> None:
    proposals = random_proposals(1)
    assert SupportSelector(POINTS, []).select(proposals, {}) == largest(proposals)


def test_the_child_lands_in_the_band_with_the_best_score_there(darts_params) -> None:  # type: ignore[no-untyped-def]
    costs, measure = darts_params
    target = Target("params", costs.reference_total, 0.05)
    selector = SupportSelector(POINTS, [], costs, target)
    for seed in range(3):
        proposals = random_proposals(seed)
        free = largest(proposals)
        chosen = selector.select(proposals, {})
        real = measure(DARTS.genotype(chosen))
        assert target.low <= real <= target.value, (seed, real, target)
        if target.holds(measure(DARTS.genotype(free))):
            assert chosen == free, "an unconstrained choice in the band is kept as it is"
        else:
            assert score(chosen, proposals, POINTS) <= score(free, proposals, POINTS)


def test_the_knapsack_matches_brute_force_on_a_small_problem() -> None:
    points = [DecisionPoint("g", i, 2, ("a", "b", "c"), 1, 2) for i in range(3)]
    generator = torch.Generator().manual_seed(3)
    per_point = {p.key: torch.tensor([1.0, 5.0, 9.0, 2.0, 6.0, 10.0], dtype=torch.float64) * (1 + p.index)
                 for p in points}
    reference = {p.key: [(0, 0)] for p in points}
    costs = CandidateCosts(per_point, reference, 100.0 + sum(float(per_point[p.key][0]) for p in points))
    cap = OpCap("g", ("c",), 1)
    for trial in range(5):
        proposals = {p.key: torch.rand(p.size, generator=generator) for p in points}
        target = Target("params", 130.5 + 6.0 * trial, 0.1)  # children cost 106-160, none exactly a band's end
        chosen = SupportSelector(points, [cap], costs, target).select(proposals, {})
        best = None
        for combo in itertools.product(*[[[(e, o)] for e in range(2) for o in range(3)] for _ in points]):
            supports = {p.key: support for p, support in zip(points, combo, strict=True)}
            capped = sum(p.ops[o] == "c" for p in points for _, o in supports[p.key])
            if capped <= 1 and target.holds(costs.total(supports, points)):
                value = score(supports, proposals, points)
                best = value if best is None else max(best, value)
        assert best is not None
        assert target.holds(costs.total(chosen, points))
        assert score(chosen, proposals, points) == pytest.approx(best)


def test_an_unreachable_band_keeps_the_costliest_child_under_the_target(darts_params) -> None:  # type: ignore[no-untyped-def]
    costs, measure = darts_params
    cheapest = SupportSelector(POINTS, [], costs, Target("params", 1.0, 0.05)).select(random_proposals(0), {})
    floor = measure(DARTS.genotype(cheapest))
    assert all(PRIMITIVES[op] in PARAMETER_FREE for support in cheapest.values() for _, op in support), \
        "a target below every child keeps the cheapest one"
    narrow = Target("params", floor + 1.0, 0.0)  # only children of exactly floor + 1 would be in the band
    chosen = SupportSelector(POINTS, [], costs, narrow).select(random_proposals(0), {})
    assert measure(DARTS.genotype(chosen)) <= narrow.value


def test_the_cap_limits_parameter_free_ops_in_the_normal_cell_only() -> None:
    caps = DARTS.op_caps(DartsSettings(max_parameter_free=2))
    assert caps == [OpCap("normal", PARAMETER_FREE, 2)] and DARTS.op_caps(DartsSettings()) == []
    proposals = {}
    for point in POINTS:  # every node prefers skip and pools
        x = torch.zeros(point.size)
        for edge in range(point.num_inputs):
            x[edge * 7 + PRIMITIVES.index("skip_connect")] = 2.0 + edge
            x[edge * 7 + PRIMITIVES.index("max_pool_3x3")] = 1.5
            x[edge * 7 + PRIMITIVES.index("sep_conv_5x5")] = 0.5
        proposals[point.key] = x
    chosen = SupportSelector(POINTS, caps).select(proposals, {})
    free_ops = lambda group: sum(PRIMITIVES[op] in PARAMETER_FREE  # noqa: E731
                                 for (g, _), support in chosen.items() if g == group for _, op in support)
    assert free_ops("normal") == 2
    assert free_ops("reduce") == 8, "the reduction cell is not capped"
    parametric = [PRIMITIVES[op] for (g, _), s in chosen.items() if g == "normal" for _, op in s
                  if PRIMITIVES[op] not in PARAMETER_FREE]
    assert parametric == ["sep_conv_5x5"] * 6, "where the cap binds, the next best op of the edge takes its place"
    # A frozen point counts against the cap: two frozen skips leave no room for more.
    frozen = {("normal", 0): [(0, PRIMITIVES.index("skip_connect")), (1, PRIMITIVES.index("skip_connect"))]}
    rest = {key: x for key, x in proposals.items() if key not in frozen}
    chosen = SupportSelector(POINTS, caps).select(rest, frozen)
    assert chosen[("normal", 0)] == frozen[("normal", 0)]
    assert all(PRIMITIVES[op] not in PARAMETER_FREE for (g, i), s in chosen.items() if g == "normal" and i > 0
               for _, op in s)


def canonical(genotype: Any) -> Any:
    """A DARTS genotype with each node's two edges in input order (the order does not change the network)."""
    if not hasattr(genotype, "normal"):
        return genotype
    return tuple(tuple(sorted(cell[i:i + 2], key=lambda edge: edge[1])) for cell in (genotype.normal, genotype.reduce)
                 for i in range(0, len(cell), 2))


@pytest.mark.parametrize("space, model, known", [(DARTS, MODEL, DARTS_V2), (DARTS, MODEL, DARTS_V1),
                                                 (MOBILENET, SMALL_MOBILE, None)])
def test_supports_of_a_known_genotype_give_it_back(space: Any, model: Any, known: Any) -> None:
    genotype = known or space.known_genotype("MBV2", model)
    assert canonical(space.genotype(space.supports(genotype))) == canonical(genotype)


def learner(tmp_model: Any = MODEL, space: Any = DARTS, **search: Any) -> ArchitectureLearner:
    settings = SearchConfig(**{"search_epochs": 2, **search})
    return ArchitectureLearner(space, tmp_model, SHAPE, settings, seed=3, device=torch.device("cpu"),
                               cost=child_cost(space, tmp_model, SHAPE, None))


def test_the_search_can_start_at_the_known_design() -> None:
    assert canonical(learner(init="known").genotype()) == canonical(DARTS_V2)
    assert learner(tmp_model=SMALL_MOBILE, space=MOBILENET, init="known").genotype() == \
        MOBILENET.known_genotype("MBV2", SMALL_MOBILE)
    random_start = learner()
    assert canonical(random_start.genotype()) != canonical(DARTS_V2)
    assert all(torch.equal(a.A, b.A) for (_, a), (_, b) in zip(random_start.code.nodes(),
                                                                learner(init="known").code.nodes(), strict=True))


def test_warmup_redraw_zero_trains_the_current_support_and_a_share_redraws_some_points() -> None:
    still = learner(warmup_epochs=1, warmup_redraw=0.0, init="known")
    still.network.train()
    mixed = learner(warmup_epochs=1, warmup_redraw=0.25, init="known")
    mixed.network.train()
    redrawn = 0
    for index in range(20):
        still.start_step(index)
        assert {k: [(e, o) for e, o, _ in a] for k, a in still.weights().items()} == still.code.supports()
        mixed.start_step(index)
        redrawn += sum([(e, o) for e, o, _ in a] != mixed.code.supports()[k] for k, a in mixed.weights().items())
    assert 0.1 * 160 < redrawn < 0.35 * 160, "about a quarter of the 8 points x 20 steps run another support"


def test_warmup_draws_uniform_architectures_while_the_codes_wait() -> None:
    arch = learner(warmup_epochs=2, warmup_redraw=1.0)
    codes = {key: node.b.detach().clone() for key, node in arch.code.nodes()}
    assert arch.phase is Phase.WARMUP and arch.parameters() == []
    arch.network.train()
    draws = []
    for index in range(40):
        arch.start_step(index)
        weights = arch.weights()
        assert all(float(w) == 1.0 and not w.requires_grad for active in weights.values() for _, _, w in active)
        draws.append({key: [(e, o) for e, o, _ in active] for key, active in weights.items()})
    assert all(len({e for e, _ in s}) == 2 for d in draws for s in d.values()), "distinct inputs per node"
    ops = {o for d in draws for s in d.values() for _, o in s}
    assert ops == set(range(len(PRIMITIVES))), "every op is drawn"
    again = learner(warmup_epochs=2, warmup_redraw=1.0)
    again.start_step(7)
    assert {k: [(e, o) for e, o, _ in a] for k, a in again.weights().items()} == draws[7], "a function of seed, step"
    arch.network.eval()
    assert {k: [(e, o) for e, o, _ in a] for k, a in arch.weights().items()} == arch.code.supports()
    arch.end_of_epoch(arch.network, 1)
    assert arch.phase is Phase.WARMUP and arch.log_rows(1) == []
    arch.end_of_epoch(arch.network, 2)
    assert arch.phase is Phase.SEARCH and arch.parameters()
    assert all(torch.equal(node.b, codes[key]) for key, node in arch.code.nodes())
    restored = learner(warmup_epochs=2, warmup_redraw=1.0)
    restored.load_state_dict(arch.state_dict())
    assert restored.phase is Phase.SEARCH
    arch.end_of_epoch(arch.network, 3)
    assert arch.phase is Phase.SEARCH and arch.log_rows(3)
    arch.end_of_epoch(arch.network, 4)
    assert arch.phase is Phase.TRAIN, "the search cap counts from the end of the warm-up"


def test_a_learner_with_a_params_target_reports_its_child_in_the_band() -> None:
    arch = learner(target="params", init="random")
    assert arch.target is not None
    assert arch.target.value == metric_cost(DARTS, MODEL, SHAPE, None, "params")(DARTS_V2)
    with torch.no_grad():
        for _, node in arch.code.nodes():
            node.b.add_(torch.randn(node.b.shape, generator=torch.Generator().manual_seed(1)))
    arch.end_of_epoch(arch.network, 1)
    report = arch.target_report(arch.cost(arch.genotype()))
    assert report is not None and report["in_band"] and 0.95 <= report["ratio"] <= 1.0


@pytest.mark.parametrize("space, model", [(DARTS, MODEL), (MOBILENET, SMALL_MOBILE)])
def test_op_affine_always_lets_every_candidates_batchnorm_train_from_the_start(space: Any, model: Any) -> None:
    def norms(arch: ArchitectureLearner) -> list[torch.nn.BatchNorm2d]:
        return [m for m in arch.network.modules() if isinstance(m, torch.nn.BatchNorm2d) and m.affine]

    at_freeze, always = learner(model, space, init="known"), learner(model, space, init="known", op_affine="always")
    assert any(not m.weight.requires_grad for m in norms(at_freeze)), "the default waits for the freeze"
    assert all(m.weight.requires_grad and m.bias.requires_grad for m in norms(always))
    always.network.train()
    inputs = torch.randn(4, SHAPE.channels, SHAPE.image_size, SHAPE.image_size)
    always.forward(inputs)[0].sum().backward()
    active = [m for m in norms(always) if m.weight.grad is not None]
    assert active and len(active) < len(norms(always)), "the active candidates' scales get gradients, the rest none"
