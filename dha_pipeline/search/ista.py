"""ISTA-NAS in one stage, for any search space's decision points (docs/METHOD.md, "Architecture").

Per decision point, the architecture is a sparse x in R^n (one entry per (input, candidate op)),
compressed into a learnable code b = A x in R^m (m < n) by a fixed random measurement matrix A.
During an epoch the network runs only the support S of x (`keep` distinct inputs, the best op of
each) with the one-step ISTA weights w_S = x_S + A_S^T (b - A_S x_S), so the training loss reaches b
through w. Once per epoch x is recovered from b by FISTA; a point whose x stopped moving freezes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dha_pipeline.spaces.base import ActiveOp, ArchWeights, DecisionPoint, PointKey, Support

def measurement_matrix(m: int, n: int, seed: int) -> torch.Tensor:
    """A fixed m x n Gaussian matrix with unit-norm columns (float32, CPU), reproducible from `seed`.

    Unit columns make every (edge, op) entry of x equally visible in b, so |x| ranks fairly.
    """
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(m, n, generator=generator, dtype=torch.float32)
    return matrix / torch.linalg.vector_norm(matrix, dim=0, keepdim=True)


def soft_threshold(z: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The proximal map of threshold * ||.||_1."""
    return torch.sign(z) * torch.clamp(z.abs() - threshold, min=0.0)


@torch.no_grad()
def fista(A: torch.Tensor, b: torch.Tensor, lam: float, max_iter: int = 1000, tol: float = 1e-8,
          x0: torch.Tensor | None = None) -> torch.Tensor:
    """argmin_x 1/2 ||A x - b||^2 + lam ||x||_1 (no intercept) by FISTA, in float64.

    Step 1/L with L the largest eigenvalue of A^T A, soft-thresholding, Nesterov
    momentum with gradient-based adaptive restart (O'Donoghue & Candes, 2015): the
    momentum resets when it points uphill. The restart keeps FISTA's fixed point
    and rate but stops the oscillations that otherwise make a relative-change test
    fire long before convergence on these underdetermined problems (m < n).
    Stops when ||x_k - x_{k-1}|| <= tol * ||x_k||, or after `max_iter` iterations;
    `x0` warm-starts it. Returns x in b's dtype and device.
    """
    work = torch.float64
    A64, b64 = A.detach().to(work), b.detach().to(work)
    gram = A64.T @ A64
    target = A64.T @ b64
    lipschitz = torch.linalg.eigvalsh(gram)[-1]
    step, threshold = 1.0 / lipschitz, lam / lipschitz
    x = torch.zeros(A.shape[1], dtype=work, device=A.device) if x0 is None else x0.detach().to(work).clone()
    y, t = x.clone(), 1.0
    for _ in range(max_iter):
        x_new = soft_threshold(y - step * (gram @ y - target), threshold)
        if torch.dot(y - x_new, x_new - x) > 0:
            t = 1.0
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        change = torch.linalg.vector_norm(x_new - x)
        x, t = x_new, t_new
        if change <= tol * torch.linalg.vector_norm(x):
            break
    return x.to(dtype=b.dtype, device=b.device)


def select_support(x: torch.Tensor, num_inputs: int, num_ops: int, k: int) -> Support:
    """The k (edge, op) pairs a decision point keeps, sorted by edge.

    x is read as (num_inputs, num_ops). Each edge's best op is the one of largest |x|
    (every op column competes); the k edges whose best |x| is largest are kept. Ties
    go to the lower op index, then to the lower edge index.
    """
    if not 0 < k <= num_inputs:
        raise ValueError(f"cannot keep {k} distinct edges out of {num_inputs}")
    magnitude = x.detach().abs().reshape(num_inputs, num_ops).cpu()
    op_order = torch.sort(magnitude, dim=1, descending=True, stable=True).indices
    best_op = op_order[:, 0]
    best = magnitude.gather(1, best_op[:, None])[:, 0]
    edges = torch.sort(best, descending=True, stable=True).indices[:k]
    edges = torch.sort(edges).values
    return list(zip(edges.tolist(), best_op[edges].tolist()))


def support_index(support: Support, num_ops: int) -> list[int]:
    """Flat positions in x of the (edge, op) pairs."""
    return [edge * num_ops + op for edge, op in support]


def _support_weights(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """w_S = x_S + A_S^T (b - A_S x_S) for the flat positions `index`."""
    A_S, x_S = A[:, index], x[index]
    return x_S + A_S.T @ (b - A_S @ x_S)


def one_step_weights(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, support: Support,
                     num_ops: int) -> torch.Tensor:
    """One ISTA step from x restricted to the support, zero elsewhere; differentiable w.r.t. b."""
    index = torch.tensor(support_index(support, num_ops), dtype=torch.long, device=A.device)
    w_S = _support_weights(A, b, x, index)
    return torch.zeros(A.shape[1], dtype=w_S.dtype, device=w_S.device).index_copy(0, index, w_S)


class NodeCode(nn.Module):
    """One decision point's A (fixed), code b (learned), last accepted x, kept support and frozen flag.

    The support starts as the largest entries of x0 and then is whatever the recovery chose (the largest
    |x| under the recipe's target and caps, search/selection.py); it and the frozen flag are mirrored in
    Python so that a forward pass needs no device synchronization.
    """

    def __init__(self, A: torch.Tensor, x0: torch.Tensor, num_ops: int, keep: int) -> None:
        super().__init__()
        self.num_ops, self.keep = num_ops, keep
        self.num_inputs = A.shape[1] // num_ops
        self.register_buffer("A", A)
        self.b = nn.Parameter(A @ x0)
        self.register_buffer("x_last", x0.clone())
        self.register_buffer("frozen", torch.tensor(False))
        self.register_buffer("last_drift", torch.tensor(math.inf))
        support = select_support(x0, self.num_inputs, num_ops, keep)
        self.register_buffer("support_index", torch.tensor(support_index(support, num_ops), dtype=torch.long))
        self.support: Support = []
        self.is_frozen = False
        self._sync()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync())

    def _sync(self) -> None:
        """Re-derive the Python-side support and frozen flag from the buffers."""
        self.support = [(int(i) // self.num_ops, int(i) % self.num_ops) for i in self.support_index.cpu()]
        self.is_frozen = bool(self.frozen)
        self.b.requires_grad_(not self.is_frozen)
        if self.is_frozen:
            self.b.grad = None

    def weights(self) -> list[ActiveOp]:
        """(edge, op, w) for the active support; w carries gradient to b unless frozen."""
        b = self.b.detach() if self.is_frozen else self.b
        w = _support_weights(self.A, b, self.x_last, self.support_index)
        return [(edge, op, w[j]) for j, (edge, op) in enumerate(self.support)]

    def recover(self, lam: float, max_iter: int, tol: float) -> torch.Tensor:
        """The LASSO solution for the current b (warm-started at x_last), not committed."""
        x = fista(self.A.cpu(), self.b.detach().cpu(), lam, max_iter, tol, x0=self.x_last.cpu())
        return x.to(self.x_last.device)

    @torch.no_grad()
    def commit(self, x_new: torch.Tensor, support: Support, accept: bool) -> None:
        """Record ||x_new - x_last||; adopt x_new and its chosen support only if accepted."""
        x_new = x_new.to(self.x_last)
        self.last_drift.copy_(torch.linalg.vector_norm(x_new - self.x_last))
        if accept:
            self.x_last.copy_(x_new)
            self.support_index.copy_(torch.tensor(support_index(support, self.num_ops), dtype=torch.long))
            self._sync()

    def freeze(self) -> None:
        """Fix support and weights for good: b leaves the optimizer (requires_grad off, grad None)."""
        self.frozen.fill_(True)
        self._sync()


class ArchCode(nn.Module):
    """The codes of every decision point of a space, seeded identically on every rank.

    Initialization: the point at position p (in `points` order) draws A from seed `seed * len(points)
    + p`. x0 is a valid architecture, all at value `init_scale`: `start[key]` where given (a known
    design), else `keep` distinct random inputs with one random op each; b = A x0 and x_last = x0. So
    b exactly encodes x_last, the first epoch trains that support, and its one-step weights start at
    exactly `init_scale` (the residual is zero). The default 1.0 gives every op the unit scale of a
    freshly initialized BatchNorm (gamma = 1), the scale the derived network starts from, and suits
    the recipe's default lambda (0.1) and freeze threshold (0.02). The random draws are made either
    way, so A and the random supports do not depend on `start`.
    """

    def __init__(self, points: list[DecisionPoint], seed: int, init_scale: float = 1.0,
                 start: dict[PointKey, Support] | None = None) -> None:
        super().__init__()
        self.seed = seed
        self.points = list(points)
        generator = torch.Generator().manual_seed(seed)
        groups: dict[str, list[NodeCode]] = {}
        for position, point in enumerate(self.points):
            if point.index != len(groups.get(point.group, [])):
                raise ValueError(f"decision points of group '{point.group}' must be numbered 0, 1, ... in order")
            num_ops = len(point.ops)
            A = measurement_matrix(point.code_size, point.size, seed * len(self.points) + position)
            inputs = torch.randperm(point.num_inputs, generator=generator)[:point.keep]
            ops = torch.randint(num_ops, (point.keep,), generator=generator)
            x0 = torch.zeros(point.size)
            if start is not None:
                x0[support_index(start[point.key], num_ops)] = init_scale
            else:
                x0[inputs * num_ops + ops] = init_scale
            groups.setdefault(point.group, []).append(NodeCode(A, x0, num_ops, point.keep))
        self.groups = nn.ModuleDict({group: nn.ModuleList(nodes) for group, nodes in groups.items()})

    def node(self, key: PointKey) -> NodeCode:
        """The code of decision point `key`."""
        return self.groups[key[0]][key[1]]

    def nodes(self) -> list[tuple[PointKey, NodeCode]]:
        """Every (key, NodeCode), in decision-point order."""
        return [(point.key, self.node(point.key)) for point in self.points]

    def weights(self) -> ArchWeights:
        """Per decision point, the one-step ISTA weights of its support: compute once per forward pass."""
        return {key: node.weights() for key, node in self.nodes()}

    def recover(self, lam: float, max_iter: int = 10_000, tol: float = 1e-10) -> dict[PointKey, torch.Tensor]:
        """FISTA proposals for every unfrozen point; nothing changes until `commit`."""
        return {key: node.recover(lam, max_iter, tol) for key, node in self.nodes() if not node.is_frozen}

    def commit(self, proposals: dict[PointKey, torch.Tensor], supports: dict[PointKey, Support],
               accept: bool) -> None:
        """Record each proposal's drift; adopt the proposals and their chosen supports only if `accept`
        (the budget test passed).

        A rejected round keeps x_last and the support; its drifts still count for freezing, which then
        fixes the point at the kept x_last.
        """
        for key, x_new in proposals.items():
            self.node(key).commit(x_new, supports[key], accept)

    def update_freezing(self, threshold: float) -> list[PointKey]:
        """Freeze every unfrozen point whose last drift ||x_new - x_last|| <= threshold; returns those."""
        newly = [key for key, node in self.nodes() if not node.is_frozen and float(node.last_drift) <= threshold]
        for key in newly:
            self.node(key).freeze()
        return newly

    def all_frozen(self) -> bool:
        """True once every decision point is frozen (the search phase ends)."""
        return all(node.is_frozen for _, node in self.nodes())

    def drift(self) -> dict[str, float]:
        """Last measured ||x_new - x_last|| per point as {'normal/0': ...} (inf before the first recovery)."""
        return {f"{group}/{index}": float(node.last_drift) for (group, index), node in self.nodes()}

    def supports(self) -> dict[PointKey, Support]:
        """Each point's kept support."""
        return {key: list(node.support) for key, node in self.nodes()}
