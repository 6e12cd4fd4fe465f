"""How well the latency table predicts a whole network's onnxruntime latency (docs/BENCHMARKS.md).

For a recipe of a space with a latency table (MobileNet): measure the table for every block of the
recipe's supernet and calibrate it on the space's reference networks; then for `--children` random
genotypes (and each `--genotype` JSON file given, such as a derived child's genotype.json) export the
whole plain network to ONNX and time it at batch 1 with onnxruntime, with the table's threads and
runs. Prints predicted (calibrated and merely summed) vs measured per network and the share
within +-10 %; writes the rows as CSV and a scatter plot as PNG.

    python bench/latency_predictor.py recipes/cifar10_mobilenet.toml --children 20 \
        --csv docs/results/latency_predictor.csv --png docs/results/latency_predictor.png
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
from pathlib import Path

import torch

from dha_pipeline.latency import LatencyTable, complete_table, onnx_session, table_path, time_session
from dha_pipeline.recipe import load_recipe
from dha_pipeline.figures import pyplot
from dha_pipeline.spaces.base import DataShape
from dha_pipeline.spaces.registry import get_space

TOLERANCE = 0.10


def random_genotype(space, model, rng: random.Random):  # type: ignore[no-untyped-def]
    """A genotype with a uniformly random choice in every layer."""
    supports = {point.key: [(0, rng.randrange(len(point.ops)))] for point in space.decision_points(model)}
    return space.genotype(supports)


def measured_latency(network: torch.nn.Module, shape: DataShape, threads: int, runs: int) -> float:
    """Median batch-1 onnxruntime milliseconds of the whole network, exported as `dha export` does."""
    from dha_pipeline.formats.onnx import export_onnx

    example = torch.zeros(2, shape.channels, shape.image_size, shape.image_size)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(network.eval(), example, path, 18, {})
        return time_session(onnx_session(path, threads), (shape.channels, shape.image_size, shape.image_size), runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--children", type=int, default=20)
    parser.add_argument("--genotype", type=Path, action="append", default=[], help="a genotype.json to include")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    space, model = get_space(recipe.model.space), recipe.model
    channels = 3 if recipe.data.channels == "auto" else int(recipe.data.channels)
    shape = DataShape(args.classes, channels, recipe.data.image_size)
    search = recipe.search
    table = LatencyTable(table_path(search, recipe.runs_dir), search.latency_threads, search.latency_runs)
    complete_table(table, space, model, shape)
    rng = random.Random(args.seed)
    named = [(path.stem, space.genotype_from_dict(json.loads(path.read_text()))) for path in args.genotype]
    named += [(f"random_{i}", random_genotype(space, model, rng)) for i in range(args.children)]
    rows = []
    for name, genotype in named:
        blocks = space.latency_blocks(model, shape, genotype)
        predicted, summed = table.predict(blocks), table.summed(blocks)
        torch.manual_seed(0)
        measured = measured_latency(space.network(model, shape, genotype), shape, search.latency_threads,
                                    search.latency_runs)
        error = predicted / measured - 1.0
        rows.append({"network": name, "predicted_ms": round(predicted, 4), "measured_ms": round(measured, 4),
                     "error": round(error, 4), "uncalibrated_error": round(summed / measured - 1.0, 4),
                     "genotype": " ".join(genotype.layers)})
        print(f"{name}: predicted {predicted:.3f} ms, measured {measured:.3f} ms ({100 * error:+.1f}%)", flush=True)
    within = sum(abs(row["error"]) <= TOLERANCE for row in rows)
    print(f"machine: {table.machine}; onnxruntime threads {search.latency_threads}; runs {search.latency_runs}")
    print(f"within +-{100 * TOLERANCE:.0f}%: {within} of {len(rows)} ({100 * within / len(rows):.0f}%); "
          f"mean |error| {100 * sum(abs(row['error']) for row in rows) / len(rows):.1f}%; uncalibrated (blocks "
          f"summed): {sum(abs(row['uncalibrated_error']) <= TOLERANCE for row in rows)} of {len(rows)} within, mean "
          f"|error| {100 * sum(abs(row['uncalibrated_error']) for row in rows) / len(rows):.1f}%")
    print(f"calibration factors: {table.scales}")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.png:
        plt = pyplot()
        fig, axis = plt.subplots(figsize=(5, 5))
        measured = [row["measured_ms"] for row in rows]
        axis.scatter(measured, [row["predicted_ms"] for row in rows], s=14)
        low, high = min(measured) * 0.8, max(measured) * 1.2
        axis.plot([low, high], [low, high], color="black", linewidth=0.8)
        axis.fill_between([low, high], [low * 0.9, high * 0.9], [low * 1.1, high * 1.1], color="gray", alpha=0.2,
                          label="+-10%")
        axis.set_xlabel("measured onnxruntime latency (ms, batch 1)")
        axis.set_ylabel("predicted from the block table (ms)")
        axis.set_title(f"{within} of {len(rows)} within +-10%")
        axis.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
