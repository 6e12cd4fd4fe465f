"""ISTA-NAS in one stage for the DARTS cell space (ALGORITHM.md sec. 3).

Per cell type and intermediate node i, the architecture is a sparse x_i in R^n
(n = 7 * (2 + i): one entry per (input edge, op)), compressed into a learnable
code b_i = A_i x_i in R^m by a fixed random measurement matrix A_i. During an
epoch the network runs only the support S_i of x_i (2 edges, 1 op each) with
the one-step ISTA weights w_S = x_S + A_S^T (b - A_S x_S), so the training loss
reaches b through w. Once per epoch x is recovered from b by FISTA; a node
whose x stopped moving freezes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from dha_pipeline.spaces.genotype import Genotype
from dha_pipeline.spaces.operations import PRIMITIVES
from dha_pipeline.spaces.supernet import CELL_TYPES, NODES

NUM_NODES = NODES
NUM_OPS = len(PRIMITIVES)
CODE_SIZE = 7
KEEP_EDGES = 2
FIRST_NODE = 2
"""States 0 and 1 are the cell inputs; intermediate node i is state 2 + i and reads states 0..1+i."""

Support = list[tuple[int, int]]
NodeKey = tuple[str, int]
NodeWeights = list[tuple[int, int, torch.Tensor]]


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


def select_support(x: torch.Tensor, num_inputs: int, num_ops: int = NUM_OPS, k: int = KEEP_EDGES) -> Support:
    """The k (edge, op) pairs a node keeps, sorted by edge.

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


def support_index(support: Support, num_ops: int = NUM_OPS) -> list[int]:
    """Flat positions in x of the (edge, op) pairs."""
    return [edge * num_ops + op for edge, op in support]


def _support_weights(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """w_S = x_S + A_S^T (b - A_S x_S) for the flat positions `index`."""
    A_S, x_S = A[:, index], x[index]
    return x_S + A_S.T @ (b - A_S @ x_S)


def one_step_weights(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, support: Support,
                     num_ops: int = NUM_OPS) -> torch.Tensor:
    """One ISTA step from x restricted to the support, zero elsewhere; differentiable w.r.t. b."""
    index = torch.tensor(support_index(support, num_ops), dtype=torch.long, device=A.device)
    w_S = _support_weights(A, b, x, index)
    return torch.zeros(A.shape[1], dtype=w_S.dtype, device=w_S.device).index_copy(0, index, w_S)


class NodeCode(nn.Module):
    """One node's A (fixed), code b (learned), last accepted x and frozen flag.

    The support is derived from x_last; it and the frozen flag are mirrored in
    Python so that a forward pass needs no device synchronization.
    """

    def __init__(self, A: torch.Tensor, x0: torch.Tensor, num_ops: int = NUM_OPS, keep: int = KEEP_EDGES) -> None:
        super().__init__()
        self.num_ops, self.keep = num_ops, keep
        self.num_inputs = A.shape[1] // num_ops
        self.register_buffer("A", A)
        self.b = nn.Parameter(A @ x0)
        self.register_buffer("x_last", x0.clone())
        self.register_buffer("frozen", torch.tensor(False))
        self.register_buffer("last_drift", torch.tensor(math.inf))
        self.register_buffer("support_index", torch.zeros(keep, dtype=torch.long), persistent=False)
        self.support: Support = []
        self.is_frozen = False
        self._sync()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._sync())

    def _sync(self) -> None:
        """Re-derive the support and the Python-side frozen flag from the buffers."""
        self.support = select_support(self.x_last, self.num_inputs, self.num_ops, self.keep)
        index = torch.tensor(support_index(self.support, self.num_ops), dtype=torch.long)
        self.support_index.copy_(index)
        self.is_frozen = bool(self.frozen)
        self.b.requires_grad_(not self.is_frozen)
        if self.is_frozen:
            self.b.grad = None

    def weights(self) -> NodeWeights:
        """(edge, op, w) for the active support; w carries gradient to b unless frozen."""
        b = self.b.detach() if self.is_frozen else self.b
        w = _support_weights(self.A, b, self.x_last, self.support_index)
        return [(edge, op, w[j]) for j, (edge, op) in enumerate(self.support)]

    def recover(self, lam: float, max_iter: int, tol: float) -> torch.Tensor:
        """The LASSO solution for the current b (warm-started at x_last), not committed."""
        x = fista(self.A.cpu(), self.b.detach().cpu(), lam, max_iter, tol, x0=self.x_last.cpu())
        return x.to(self.x_last.device)

    @torch.no_grad()
    def commit(self, x_new: torch.Tensor, accept: bool) -> None:
        """Record ||x_new - x_last||; adopt x_new only if accepted."""
        x_new = x_new.to(self.x_last)
        self.last_drift.copy_(torch.linalg.vector_norm(x_new - self.x_last))
        if accept:
            self.x_last.copy_(x_new)
            self._sync()

    def freeze(self) -> None:
        """Fix support and weights for good: b leaves the optimizer (requires_grad off, grad None)."""
        self.frozen.fill_(True)
        self._sync()


class ArchCode(nn.Module):
    """The codes of both cell types: 2 x `num_nodes` NodeCodes, seeded identically on every rank.

    Initialization: node (cell c, node i) draws A from seed `seed * 2 * num_nodes +
    c * num_nodes + i`. x0 is a valid random architecture: `keep` distinct random
    edges, one random op each, all at value `init_scale`; b = A x0 and x_last = x0.
    So b exactly encodes x_last, the first epoch trains a uniformly random support,
    and its one-step weights start at exactly `init_scale` (the residual is zero).
    The default 1.0 gives every op the unit scale of a freshly initialized
    BatchNorm (gamma = 1), the scale the derived network starts from, and suits
    the recipe's default lambda (0.1) and freeze threshold (0.02).
    """

    def __init__(self, seed: int, num_nodes: int = NUM_NODES, num_ops: int = NUM_OPS, code_size: int = CODE_SIZE,
                 keep: int = KEEP_EDGES, init_scale: float = 1.0) -> None:
        super().__init__()
        self.seed, self.num_nodes, self.num_ops, self.keep = seed, num_nodes, num_ops, keep
        generator = torch.Generator().manual_seed(seed)
        cells = {}
        for c, cell_type in enumerate(CELL_TYPES):
            nodes = []
            for i in range(num_nodes):
                num_inputs = FIRST_NODE + i
                A = measurement_matrix(code_size, num_ops * num_inputs, seed * len(CELL_TYPES) * num_nodes
                                       + c * num_nodes + i)
                edges = torch.randperm(num_inputs, generator=generator)[:keep]
                ops = torch.randint(num_ops, (keep,), generator=generator)
                x0 = torch.zeros(num_ops * num_inputs)
                x0[edges * num_ops + ops] = init_scale
                nodes.append(NodeCode(A, x0, num_ops, keep))
            cells[cell_type] = nn.ModuleList(nodes)
        self.cells = nn.ModuleDict(cells)

    def nodes(self) -> list[tuple[NodeKey, NodeCode]]:
        """Every ((cell type, node index), NodeCode), normal cell first."""
        return [((cell_type, i), node) for cell_type in CELL_TYPES for i, node in enumerate(self.cells[cell_type])]

    def weights(self, cell_type: str) -> list[tuple[int, NodeWeights]]:
        """Per node of `cell_type`: (node, [(edge, op, w), ...]), the one-step ISTA weights of its support.

        Compute once per forward pass and share across the cells of that type.
        """
        return [(i, node.weights()) for i, node in enumerate(self.cells[cell_type])]

    def recover(self, lam: float, max_iter: int = 10_000, tol: float = 1e-10) -> dict[NodeKey, torch.Tensor]:
        """FISTA proposals for every unfrozen node; nothing changes until `commit`."""
        return {key: node.recover(lam, max_iter, tol) for key, node in self.nodes() if not node.is_frozen}

    def commit(self, proposals: dict[NodeKey, torch.Tensor], accept: bool) -> None:
        """Record each proposal's drift; adopt the proposals only if `accept` (the budget test passed).

        A rejected round keeps x_last (and so the support); its drifts still count
        for freezing, which then fixes the node at the kept x_last.
        """
        nodes = dict(self.nodes())
        for key, x_new in proposals.items():
            nodes[key].commit(x_new, accept)

    def update_freezing(self, threshold: float) -> list[NodeKey]:
        """Freeze every unfrozen node whose last drift ||x_new - x_last|| <= threshold; returns those."""
        newly = [key for key, node in self.nodes() if not node.is_frozen and float(node.last_drift) <= threshold]
        nodes = dict(self.nodes())
        for key in newly:
            nodes[key].freeze()
        return newly

    def all_frozen(self) -> bool:
        """True once every node of both cell types is frozen (phase 1 ends)."""
        return all(node.is_frozen for _, node in self.nodes())

    def drift(self) -> dict[str, float]:
        """Last measured ||x_new - x_last|| per node as {'normal/0': ...} (inf before the first recovery)."""
        return {f"{cell_type}/{i}": float(node.last_drift) for (cell_type, i), node in self.nodes()}

    def genotype(self, proposals: dict[NodeKey, torch.Tensor] | None = None) -> Genotype:
        """The DARTS genotype of x_last, or of `proposals` where given (for the budget test before commit)."""
        proposals = proposals or {}
        edges: dict[str, list[tuple[str, int]]] = {cell_type: [] for cell_type in CELL_TYPES}
        for key, node in self.nodes():
            support = (select_support(proposals[key], node.num_inputs, self.num_ops, self.keep)
                       if key in proposals else node.support)
            edges[key[0]].extend((PRIMITIVES[op], edge) for edge, op in support)
        concat = tuple(range(FIRST_NODE, FIRST_NODE + self.num_nodes))
        genotype = Genotype(normal=tuple(edges["normal"]), normal_concat=concat,
                            reduce=tuple(edges["reduce"]), reduce_concat=concat)
        genotype.validate()
        return genotype

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of the run's codes: seed, supports, frozen flags, drifts."""
        return {"seed": self.seed, "genotype": self.genotype().to_dict(), "drift": self.drift(),
                "frozen": {f"{c}/{i}": node.is_frozen for (c, i), node in self.nodes()}}
