"""What the search leaves behind: per-epoch CSV logs of policy, hyper-parameters and architecture,
and the PNG plots made from them at the end. Only the main process writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.distributed import is_main_process
from dha_pipeline.fileio import write_json
from dha_pipeline.metrics import write_csv
from dha_pipeline.report import plots

TOP_PAIRS_LOGGED = 5


def policy_row(epoch: int, policy: Any) -> dict[str, Any]:
    """One policy.csv row: entropy and the most probable pairs."""
    row: dict[str, Any] = {"epoch": epoch, "entropy": float(policy.entropy().detach()),
                           "max_entropy": policy.max_entropy}
    for rank, (op1, op2, prob) in enumerate(policy.top_pairs(TOP_PAIRS_LOGGED), start=1):
        row[f"top{rank}"] = f"{op1}+{op2}"
        row[f"top{rank}_p"] = prob
    return row


def arch_rows(epoch: int, x_by_cell: dict[str, list[np.ndarray]], frozen: dict[str, list[bool]]
              ) -> list[dict[str, Any]]:
    """arch.csv rows: the recovered x of every node (JSON list) and whether it is frozen."""
    return [{"epoch": epoch, "cell": cell_type, "node": node, "frozen": frozen[cell_type][node],
             "x": json.dumps([round(float(v), 6) for v in x.ravel()])}
            for cell_type, nodes in x_by_cell.items() for node, x in enumerate(nodes)]


def write_logs(search_dir: Path, logs: dict[str, list[dict[str, Any]]]) -> None:
    """policy.csv, hparams.csv and arch.csv from the rows gathered so far."""
    if not is_main_process():
        return
    for name, rows in logs.items():
        if rows:
            write_csv(search_dir / f"{name}.csv", rows)


def write_plots(run_dir: Path, history: list[dict[str, float]], logs: dict[str, list[dict[str, Any]]],
                policy: Any | None, genotype: dict[str, Any], op_names: list[str]) -> list[Path]:
    """Every search plot whose data exists; returns the paths written."""
    if not is_main_process():
        return []
    plot_dir = run_dir / "plots"
    written = [plot_dir / "learning_curves.png"]
    plots.learning_curves(history, written[-1])
    if logs.get("hparams"):
        written.append(plot_dir / "hparams.png")
        plots.hyperparameter_trajectories(logs["hparams"], written[-1])
    if policy is not None:
        written.append(plot_dir / "policy_heatmap.png")
        k = policy.num_ops
        plots.policy_heatmap(policy.probs().detach().cpu().numpy().reshape(k, k), list(policy.op_names),
                             written[-1], f"augmentation policy (entropy {float(policy.entropy().detach()):.2f} nats)")
    if logs.get("arch"):
        written.append(plot_dir / "arch_weights.png")
        plots.architecture_weights(_arch_history(logs["arch"], len(op_names)), op_names, written[-1])
    written.append(plot_dir / "cells.png")
    plots.cell_diagrams(genotype, written[-1])
    write_json(run_dir / "search" / "genotype.json", genotype)
    return written


def _arch_history(rows: list[dict[str, Any]], num_ops: int) -> dict[str, list[np.ndarray]]:
    """arch.csv rows -> per cell type, per epoch, an array (nodes, inputs, ops) zero-padded."""
    epochs = sorted({int(row["epoch"]) for row in rows})
    nodes = 1 + max(int(row["node"]) for row in rows)
    inputs = 1 + nodes
    history: dict[str, list[np.ndarray]] = {}
    for cell_type in sorted({row["cell"] for row in rows}):
        per_epoch = []
        for epoch in epochs:
            grid = np.zeros((nodes, inputs, num_ops))
            for row in rows:
                if row["cell"] == cell_type and int(row["epoch"]) == epoch:
                    x = np.asarray(json.loads(row["x"])).reshape(-1, num_ops)
                    grid[int(row["node"]), :len(x)] = x
            per_epoch.append(grid)
        history[cell_type] = per_epoch
    return history
