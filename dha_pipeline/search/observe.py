"""What the search leaves behind: per-epoch CSV logs (policy, hyper-parameters, architecture) and
the PNG plots made from them. Only the main process writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dha_pipeline.distributed import is_main_process
from dha_pipeline.layout import SEARCH_LOGS, RunLayout
from dha_pipeline.metrics import write_csv
from dha_pipeline.report import plots
from dha_pipeline.search.learner import Learner
from dha_pipeline.search.policy import NoPolicy, PolicyLearner
from dha_pipeline.spaces.base import DecisionPoint, SearchSpace


def empty_logs() -> dict[str, list[dict[str, Any]]]:
    """One empty row list per search log."""
    return {name: [] for name in SEARCH_LOGS}


def add_log_rows(logs: dict[str, list[dict[str, Any]]], learners: tuple[Learner, ...], epoch: int) -> None:
    """Append each learner's rows of epoch `epoch` to its log; learners that share a log (eta and p share
    hparams) contribute columns to the same rows, in learner order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for learner in learners:
        if learner.log is None:
            continue
        own = learner.log_rows(epoch)
        shared = rows.get(learner.log)
        rows[learner.log] = own if shared is None else [{**a, **b} for a, b in zip(shared, own, strict=True)]
    for name, new in rows.items():
        logs[name] += new


def epoch_line(row: dict[str, Any], epochs: int, frozen: str) -> str:
    """An epoch's history row as one whole line: what a log file keeps of it."""
    extra = f" H {row['policy_entropy']:.2f}" if "policy_entropy" in row else ""
    extra += f" p {row['aug_fraction']:.3f}" if "aug_fraction" in row else ""
    return (f"epoch {row['epoch']}/{epochs} {row['phase']} loss {row['train_loss']:.4f} train {row['train_top1']:.4f} "
            f"val {row['val_top1']:.4f} (loss {row['val_loss']:.4f}) lr {row['scheduled_lr']:.3e} "
            f"(base {row['lr']:.3e}) wd {row['weight_decay']:.2e}{extra} frozen {frozen} {row['seconds']:.1f} s")


def write_logs(layout: RunLayout, history: list[dict[str, Any]], logs: dict[str, list[dict[str, Any]]]) -> None:
    """history.csv and the search logs that have rows."""
    if not is_main_process():
        return
    write_csv(layout.history, history)
    for name, rows in logs.items():
        if rows:
            write_csv(layout.log(name), rows)


def write_plots(layout: RunLayout, history: list[dict[str, Any]], logs: dict[str, list[dict[str, Any]]],
                policy: PolicyLearner | NoPolicy, space: SearchSpace, points: list[DecisionPoint],
                genotype: dict[str, Any]) -> list[Path]:
    """Every search plot whose data exists; returns the paths written."""
    if not is_main_process():
        return []
    written = [layout.plot("learning_curves")]
    plots.learning_curves(history, written[-1])
    if logs.get("hparams"):
        written.append(layout.plot("hparams"))
        plots.hyperparameter_trajectories(logs["hparams"], written[-1])
    heatmap = policy.heatmap()
    if heatmap is not None:
        written.append(layout.plot("policy_heatmap"))
        plots.policy_heatmap(*heatmap[:2], written[-1], heatmap[2])
    if logs.get("arch"):
        written.append(layout.plot("arch_weights"))
        op_names, history_by_group = arch_history(logs["arch"], points)
        plots.architecture_weights(history_by_group, op_names, written[-1])
    written.append(layout.plot("architecture"))
    space.plot(genotype, written[-1])
    return written


def arch_history(rows: list[dict[str, Any]], points: list[DecisionPoint]
                 ) -> tuple[list[str], dict[str, list[np.ndarray]]]:
    """arch.csv rows -> (every op name, per group and epoch an array (points, inputs, ops), zero-padded)."""
    op_names = list(dict.fromkeys(op for point in points for op in point.ops))
    by_key = {point.key: point for point in points}
    epochs = sorted({int(row["epoch"]) for row in rows})
    history: dict[str, list[np.ndarray]] = {}
    for group in dict.fromkeys(point.group for point in points):
        members = [point for point in points if point.group == group]
        inputs = max(point.num_inputs for point in members)
        grids = {epoch: np.zeros((len(members), inputs, len(op_names))) for epoch in epochs}
        for row in rows:
            if row["group"] != group:
                continue
            point = by_key[(group, int(row["index"]))]
            x = np.asarray(json.loads(row["x"])).reshape(point.num_inputs, len(point.ops))
            columns = [op_names.index(op) for op in point.ops]
            grids[int(row["epoch"])][point.index, :point.num_inputs][:, columns] = x
        history[group] = [grids[epoch] for epoch in epochs]
    return op_names, history
