"""Predicted inference latency from a per-block lookup table measured with onnxruntime on this machine.

A space that supports latency budgets cuts its networks into blocks (stem, each layer's choice, head)
whose latency does not depend on the other blocks' choices. Each distinct block (its kind and shapes)
is exported to ONNX alone and timed at batch 1 with onnxruntime (warm-up, then the median of many
runs, on a fixed number of threads). A network's predicted latency is the fixed cost of one
onnxruntime call plus the sum of its blocks' latencies, each measured less that fixed cost, times a
calibration factor. Blocks timed alone cost more than inside a whole network (onnxruntime converts
layouts at every graph boundary and fuses across blocks inside one graph), so the table also times a
few reference networks of the space whole (the space's known architectures) and keeps, per backbone,
the median of measured / summed: the factor. The reference networks are not the ones a search
proposes, and `bench/latency_predictor.py` checks the prediction on random other networks.
The table is a JSON file keyed by block; it records the machine, the threads and the onnxruntime
version, and is reused by every run with the same shapes on that machine (`dha profile-latency`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.layout import shared_latency_table
from dha_pipeline.metrics import call_milliseconds
from dha_pipeline.progress import progress_bar
from dha_pipeline.recipe import Recipe, SearchConfig
from dha_pipeline.spaces.base import DataShape, LatencyBlock, SearchSpace

WARMUP_RUNS = 10
OVERHEAD_KEY = "onnxruntime-call"
"""The table entry of one onnxruntime call on a trivial model: the fixed cost added once per network."""


def backbone_signature(blocks: list[LatencyBlock]) -> str:
    """What a calibration factor belongs to: a network's first and last block (stem and head), whose keys
    name its input size, channels, widths and classes."""
    return f"{blocks[0].key}|{blocks[-1].key}"


def machine_name() -> str:
    """What the table's numbers belong to: CPU model, core count, OS and architecture."""
    model = platform.processor() or ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model or 'unknown CPU'} x{os.cpu_count()} ({platform.system()} {platform.machine()})"


def onnx_session(path: Path, threads: int) -> Any:
    """A CPU onnxruntime session with every graph optimization (BatchNorm folding included), on `threads`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def time_session(session: Any, input_shape: tuple[int, ...], runs: int) -> float:
    """Median batch-1 milliseconds of `runs` calls after a warm-up."""
    name = session.get_inputs()[0].name
    sample = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    return statistics.median(call_milliseconds(lambda: session.run(None, {name: sample}), runs, WARMUP_RUNS))


def module_latency(module: nn.Module, input_shape: tuple[int, int, int], threads: int, runs: int) -> float:
    """Median batch-1 onnxruntime milliseconds of `module` (eval mode), exported to a temporary ONNX file."""
    module = module.eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "block.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(1, *input_shape),), str(path), dynamo=False, opset_version=18,
                              input_names=["input"], output_names=["output"])
        return time_session(onnx_session(path, threads), input_shape, runs)


class _CallOverhead(nn.Module):
    """The smallest useful model: what one onnxruntime call costs beyond its blocks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


class LatencyTable:
    """Block key -> batch-1 milliseconds (less the call overhead), for one machine and thread count."""

    def __init__(self, path: Path, threads: int, runs: int) -> None:
        self.path, self.threads, self.runs = path, threads, runs
        self.machine = machine_name()
        self.entries: dict[str, float] = {}
        self.scales: dict[str, float] = {}
        """Backbone signature -> calibration factor (measured whole / predicted from blocks)."""
        if path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            stored = json.loads(self.path.read_text())
            entries = {str(key): float(value) for key, value in stored["entries"].items()}
            scales = {str(key): float(value) for key, value in stored.get("scales", {}).items()}
            same = stored["machine"] == self.machine and int(stored["threads"]) == self.threads
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DhaError(f"latency table '{self.path}' is not a table written by dha",
                           "delete it; `dha profile-latency RECIPE` measures a new one") from None
        if not same:
            raise DhaError(f"latency table '{self.path}' was measured on another machine or thread count "
                           f"({stored['machine']}, {stored['threads']} threads)",
                           "point search.latency_table at a new file, or delete this one to remeasure here")
        self.entries, self.scales = entries, scales

    def missing(self, blocks: Iterable[LatencyBlock]) -> list[LatencyBlock]:
        """The distinct blocks the table has no entry for (and the call overhead if it is missing)."""
        found: dict[str, LatencyBlock] = {}
        if OVERHEAD_KEY not in self.entries:
            found[OVERHEAD_KEY] = LatencyBlock(OVERHEAD_KEY, _CallOverhead, (1, 1, 1))
        for block in blocks:
            if block.key not in self.entries:
                found.setdefault(block.key, block)
        return list(found.values())

    def measure(self, blocks: Iterable[LatencyBlock], description: str = "profiling latency") -> int:
        """Time every block the table lacks and save the table (temp file, then rename); returns how many."""
        todo = self.missing(blocks)
        if not todo:
            return 0
        if OVERHEAD_KEY in (block.key for block in todo):
            self.entries[OVERHEAD_KEY] = module_latency(_CallOverhead(), (1, 1, 1), self.threads, self.runs)
        overhead = self.entries[OVERHEAD_KEY]
        with progress_bar() as progress:
            task = progress.add_task(description, total=len(todo))
            for block in todo:
                if block.key != OVERHEAD_KEY:
                    measured = module_latency(block.build(), block.input_shape, self.threads, self.runs)
                    self.entries[block.key] = max(0.0, measured - overhead)
                progress.advance(task)
        self.save()
        return len(todo)

    def save(self) -> None:
        """Write the table atomically."""
        import onnxruntime as ort

        write_json(self.path, {"machine": self.machine, "threads": self.threads, "runs": self.runs,
                               "onnxruntime": ort.__version__, "overhead_key": OVERHEAD_KEY,
                               "scales": dict(sorted(self.scales.items())),
                               "entries": dict(sorted(self.entries.items()))})

    def summed(self, blocks: list[LatencyBlock]) -> float:
        """The uncalibrated prediction: one call's cost plus the network's blocks (all must be in the table)."""
        keys = [block.key for block in blocks]
        absent = [key for key in (OVERHEAD_KEY, *keys) if key not in self.entries]
        if absent:
            raise DhaError(f"latency table '{self.path}' has no entry for '{absent[0]}'",
                           "run `dha profile-latency RECIPE` with this recipe first")
        return self.entries[OVERHEAD_KEY] + sum(self.entries[key] for key in keys)

    def calibrate(self, references: list[tuple[nn.Module, list[LatencyBlock]]]) -> float:
        """Time each reference network whole; the median of measured / summed becomes the factor of their
        backbone (saved). Returns it."""
        ratios = []
        for network, blocks in references:
            whole = module_latency(network, blocks[0].input_shape, self.threads, self.runs)
            ratios.append(whole / self.summed(blocks))
        self.scales[backbone_signature(references[0][1])] = statistics.median(ratios)
        self.save()
        return self.scales[backbone_signature(references[0][1])]

    def predict(self, blocks: list[LatencyBlock]) -> float:
        """Predicted batch-1 milliseconds of the network made of `blocks`: summed, times its backbone's factor
        (1 where the backbone was never calibrated)."""
        return self.summed(blocks) * self.scales.get(backbone_signature(blocks), 1.0)


def table_path(search: SearchConfig, runs_dir: str) -> Path:
    """The latency table a recipe uses: `search.latency_table`, or `<runs_dir>/latency_table.json`."""
    return Path(search.latency_table) if search.latency_table else shared_latency_table(runs_dir)


def complete_table(table: LatencyTable, space: SearchSpace, model: Any, shape: DataShape,
                   blocks: list[LatencyBlock] | None = None) -> int:
    """Measure what `table` lacks for `blocks` (default: every block of the supernet of `model`) and for the
    space's reference networks, then calibrate the backbone if it has no factor yet. Returns the number of
    blocks measured."""
    genotypes = [space.known_genotype(name, model) for name in space.latency_references]
    reference_blocks = [space.latency_blocks(model, shape, genotype) for genotype in genotypes]
    todo = space.latency_blocks(model, shape, None) if blocks is None else blocks
    measured = table.measure([*todo, *(block for group in reference_blocks for block in group)])
    if backbone_signature(reference_blocks[0]) not in table.scales:  # the whole networks only when calibrating
        networks = [space.network(model, shape, genotype) for genotype in genotypes]
        table.calibrate(list(zip(networks, reference_blocks, strict=True)))
    return measured


def prepared_table(recipe: Recipe, space: SearchSpace, shape: DataShape) -> LatencyTable:
    """The recipe's latency table, complete and calibrated for its supernet, measuring what it lacks here
    (one process only: several processes need it complete beforehand)."""
    from dha_pipeline.distributed import world_size

    table = LatencyTable(table_path(recipe.search, recipe.runs_dir), recipe.search.latency_threads,
                         recipe.search.latency_runs)
    blocks = space.latency_blocks(recipe.model, shape, None)
    if table.missing(blocks) or backbone_signature(blocks) not in table.scales:
        if world_size() > 1:
            raise DhaError(f"latency table '{table.path}' lacks blocks of this recipe, and several processes run",
                           "run `dha profile-latency RECIPE` on one process first")
        complete_table(table, space, recipe.model, shape, blocks)
    return table
