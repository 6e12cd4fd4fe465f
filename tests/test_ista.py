"""ISTA-NAS codes: FISTA recovery, support selection, one-step weights, freezing, genotype, state."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso

from dha_pipeline.spaces.darts.settings import DartsSettings
from dha_pipeline.search.ista import ArchCode, fista, measurement_matrix, one_step_weights, select_support
from dha_pipeline.spaces.base import DecisionPoint
from dha_pipeline.spaces.darts.space import SPACE
from dha_pipeline.spaces.darts.genotype import Genotype
from dha_pipeline.spaces.darts.operations import PRIMITIVES
from dha_pipeline.spaces.darts.supernet import CELL_TYPES
from dha_pipeline.spaces.darts.supernet import NODES as NUM_NODES

POINTS = SPACE.decision_points(DartsSettings())


def darts_code(seed: int, **kwargs: float) -> ArchCode:
    """The codes of the DARTS cell space."""
    return ArchCode(POINTS, seed, **kwargs)


def largest(proposals: dict) -> dict:
    """Each proposal's support without target or caps: its largest entries."""
    points = {point.key: point for point in POINTS}
    return {key: select_support(x, points[key].num_inputs, len(points[key].ops), points[key].keep)
            for key, x in proposals.items()}


def commit_largest(arch: ArchCode) -> None:
    """Recover, and adopt every proposal with its largest entries as the support."""
    proposals = arch.recover(lam=0.1)
    arch.commit(proposals, largest(proposals), accept=True)


def cell_weights(arch: ArchCode, cell_type: str) -> list[tuple[int, list]]:
    """(node, active candidates) of one cell type."""
    weights = arch.weights()
    return [(i, weights[(cell_type, i)]) for i in range(NUM_NODES)]


def lasso_objective(A: np.ndarray, b: np.ndarray, x: np.ndarray, lam: float) -> float:
    return 0.5 * float(np.sum((A @ x - b) ** 2)) + lam * float(np.abs(x).sum())


def brute_force_lasso(A: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """The LASSO minimizer by enumerating every sign pattern and keeping the KKT-consistent best."""
    n = A.shape[1]
    best, best_value = np.zeros(n), lasso_objective(A, b, np.zeros(n), lam)
    for signs in itertools.product((-1, 0, 1), repeat=n):
        s = np.array(signs, dtype=float)
        active = s != 0
        if not active.any() or active.sum() > A.shape[0]:
            continue
        A_S = A[:, active]
        x_S = np.linalg.solve(A_S.T @ A_S, A_S.T @ b - lam * s[active])
        if np.any(np.sign(x_S) != s[active]):
            continue
        x = np.zeros(n)
        x[active] = x_S
        if np.all(np.abs(A.T @ (b - A @ x)) <= lam + 1e-9) and lasso_objective(A, b, x, lam) < best_value:
            best, best_value = x, lasso_objective(A, b, x, lam)
    return best


def test_measurement_matrix_is_seeded_with_unit_columns() -> None:
    A = measurement_matrix(7, 21, seed=3)
    assert A.dtype == torch.float32 and A.device.type == "cpu" and A.shape == (7, 21)
    torch.testing.assert_close(torch.linalg.vector_norm(A, dim=0), torch.ones(21))
    assert torch.equal(A, measurement_matrix(7, 21, seed=3))
    assert not torch.equal(A, measurement_matrix(7, 21, seed=4))


@pytest.mark.parametrize("seed", range(4))
def test_fista_matches_brute_force_lasso(seed: int) -> None:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((4, 6))
    b = rng.standard_normal(4)
    lam = 0.3
    x = fista(torch.from_numpy(A), torch.from_numpy(b), lam, max_iter=20_000, tol=1e-12).numpy()
    np.testing.assert_allclose(x, brute_force_lasso(A, b, lam), atol=1e-6)


@pytest.mark.parametrize(("node", "lam"), [(0, 0.1), (3, 0.1), (3, 0.01), (2, 0.5)])
def test_fista_matches_sklearn_lasso_without_intercept(node: int, lam: float) -> None:
    A = measurement_matrix(7, 7 * (2 + node), seed=node).double()
    b = torch.randn(7, generator=torch.Generator().manual_seed(10 + node), dtype=torch.float64)
    x = fista(A, b, lam, max_iter=20_000, tol=1e-12)
    reference = Lasso(alpha=lam / 7, fit_intercept=False, tol=1e-14, max_iter=1_000_000).fit(A.numpy(), b.numpy())
    np.testing.assert_allclose(x.numpy(), reference.coef_, atol=1e-5)


def test_fista_zero_when_lambda_dominates_and_keeps_dtype() -> None:
    A = measurement_matrix(7, 14, seed=0)
    b = 0.01 * torch.ones(7)
    x = fista(A, b, lam=10.0)
    assert x.dtype == torch.float32 and torch.count_nonzero(x) == 0


def test_select_support_two_distinct_edges_best_op_by_magnitude() -> None:
    x = torch.zeros(4, 7)
    x[3, 6] = -5.0   # largest |x|, negative, in the last op column (dil_conv_5x5)
    x[1, 2] = 2.0
    x[1, 6] = 1.9    # same edge as the runner-up: must not give edge 1 twice
    x[0, 0] = 1.0
    assert select_support(x.reshape(-1), num_inputs=4, num_ops=7, k=2) == [(1, 2), (3, 6)]
    assert PRIMITIVES[6] == "dil_conv_5x5"


def test_select_support_ties_are_deterministic() -> None:
    assert select_support(torch.zeros(21), num_inputs=3, num_ops=7, k=2) == [(0, 0), (1, 0)]
    x = torch.ones(3, 7)
    assert select_support(x.reshape(-1), num_inputs=3, num_ops=7, k=2) == [(0, 0), (1, 0)]


def test_one_step_weights_match_closed_form() -> None:
    rng = np.random.default_rng(0)
    A, b, x = rng.standard_normal((7, 21)), rng.standard_normal(7), rng.standard_normal(21)
    support = [(0, 4), (2, 6)]
    index = [0 * 7 + 4, 2 * 7 + 6]
    expected = np.zeros(21)
    expected[index] = x[index] + A[:, index].T @ (b - A[:, index] @ x[index])
    w = one_step_weights(torch.from_numpy(A), torch.from_numpy(b), torch.from_numpy(x), support, num_ops=7)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_loss_gradient_reaches_b_through_the_weights() -> None:
    arch = darts_code(0)
    loss = sum((w - 3.0) ** 2 for _, node_weights in cell_weights(arch, "normal") for _, _, w in node_weights)
    loss.backward()
    for i in range(NUM_NODES):
        assert torch.linalg.vector_norm(arch.groups["normal"][i].b.grad) > 0
        assert arch.groups["reduce"][i].b.grad is None


def test_initial_code_encodes_a_valid_random_support() -> None:
    arch = darts_code(1, init_scale=0.5)
    for cell_type in CELL_TYPES:
        for i, node_weights in cell_weights(arch, cell_type):
            assert len({edge for edge, _, _ in node_weights}) == 2
            assert all(0 <= edge < 2 + i and 0 <= op < 7 for edge, op, _ in node_weights)
            torch.testing.assert_close(torch.stack([w for _, _, w in node_weights]), torch.full((2,), 0.5))
    assert torch.equal(darts_code(1).groups["reduce"][2].A, arch.groups["reduce"][2].A)
    assert not torch.equal(darts_code(2).groups["reduce"][2].A, arch.groups["reduce"][2].A)


def test_frozen_node_code_never_changes_under_adam() -> None:
    arch = darts_code(0)
    frozen = arch.groups["normal"][1]
    frozen.freeze()
    optimizer = torch.optim.Adam(arch.parameters(), lr=0.1)
    before = frozen.b.detach().clone()
    moving_before = arch.groups["normal"][0].b.detach().clone()
    for _ in range(5):
        optimizer.zero_grad(set_to_none=False)
        loss = sum((w + 2.0) ** 2 for _, node_weights in cell_weights(arch, "normal") for _, _, w in node_weights)
        loss.backward()
        optimizer.step()
    assert frozen.b.grad is None and not frozen.b.requires_grad
    assert torch.equal(frozen.b, before)
    assert not torch.equal(arch.groups["normal"][0].b, moving_before)
    assert not any(w.requires_grad for _, _, w in frozen.weights())


def test_rejected_proposals_keep_x_last() -> None:
    arch = darts_code(0)
    with torch.no_grad():
        for _, node in arch.nodes():
            node.b.add_(torch.randn(node.b.shape, generator=torch.Generator().manual_seed(5)))
    kept = {key: node.x_last.clone() for key, node in arch.nodes()}
    genotype = SPACE.genotype(arch.supports())
    proposals = arch.recover(lam=0.1)
    assert set(proposals) == set(kept)
    chosen = largest(proposals)
    arch.commit(proposals, chosen, accept=False)
    assert all(torch.equal(node.x_last, kept[key]) for key, node in arch.nodes())
    assert SPACE.genotype(arch.supports()) == genotype
    assert all(0 < d < float("inf") for d in arch.drift().values())
    arch.commit(proposals, chosen, accept=True)
    assert all(torch.equal(node.x_last, proposals[key]) for key, node in arch.nodes())
    assert arch.supports() == chosen


def test_nodes_freeze_when_x_stops_moving() -> None:
    arch = darts_code(0)
    assert arch.update_freezing(threshold=0.02) == []
    commit_largest(arch)
    with torch.no_grad():
        arch.groups["reduce"][3].b.add_(1.0)
    commit_largest(arch)
    newly = arch.update_freezing(threshold=0.02)
    assert ("reduce", 3) not in newly and len(newly) == 2 * NUM_NODES - 1
    assert not arch.all_frozen()
    assert set(arch.recover(lam=0.1)) == {("reduce", 3)}
    commit_largest(arch)
    assert arch.update_freezing(threshold=0.02) == [("reduce", 3)]
    assert arch.all_frozen() and arch.recover(lam=0.1) == {}


def test_genotype_is_valid_and_uses_the_supports() -> None:
    arch = darts_code(4)
    genotype = SPACE.genotype(arch.supports())
    assert isinstance(genotype, Genotype)
    genotype.validate()
    assert Genotype.from_dict(genotype.to_dict()) == genotype
    assert len(genotype.normal) == len(genotype.reduce) == 2 * NUM_NODES
    assert genotype.normal_concat == genotype.reduce_concat == (2, 3, 4, 5)
    expected = tuple((PRIMITIVES[op], edge) for _, node in arch.nodes()[:NUM_NODES] for edge, op in node.support)
    assert genotype.normal == expected


def test_state_dict_round_trip_gives_identical_weights() -> None:
    arch = darts_code(0)
    with torch.no_grad():
        for _, node in arch.nodes():
            node.b.mul_(-1.5)
    commit_largest(arch)
    arch.groups["normal"][2].freeze()
    restored = darts_code(99)
    restored.load_state_dict(arch.state_dict())
    for cell_type in CELL_TYPES:
        for (_, mine), (_, theirs) in zip(cell_weights(arch, cell_type), cell_weights(restored, cell_type)):
            assert [(e, o) for e, o, _ in mine] == [(e, o) for e, o, _ in theirs]
            assert all(torch.equal(a, b) for (_, _, a), (_, _, b) in zip(mine, theirs))
    assert SPACE.genotype(restored.supports()) == SPACE.genotype(arch.supports())
    assert restored.drift() == arch.drift()
    assert not restored.groups["normal"][2].b.requires_grad and restored.groups["normal"][1].b.requires_grad


def test_codes_serve_any_layout_of_decision_points() -> None:
    """A space whose points each pick one of six ops on a single input (a layer-wise space)."""
    ops = ("k3e3", "k3e6", "k5e3", "k5e6", "k7e3", "k7e6")
    points = [DecisionPoint("layers", i, 1, ops, 1, 4) for i in range(3)]
    arch = ArchCode(points, seed=0)
    weights = arch.weights()
    assert list(weights) == [("layers", 0), ("layers", 1), ("layers", 2)]
    assert all(len(active) == 1 and active[0][0] == 0 and 0 <= active[0][1] < 6 for active in weights.values())
    with torch.no_grad():
        for _, node in arch.nodes():
            node.b.add_(torch.randn(4, generator=torch.Generator().manual_seed(3)))
    proposals = arch.recover(lam=0.05)
    assert all(len(select_support(x, 1, 6, 1)) == 1 for x in proposals.values())
    with pytest.raises(ValueError, match="numbered"):
        ArchCode([DecisionPoint("layers", 1, 1, ops, 1, 4)], seed=0)
