"""How often the codes' first recovery keeps the architecture they encode, before any training.

Each decision point's code starts at b = A x0 (x0: the known design with `search.init = known`, or a random
support); the first FISTA recovery of x from b should give x0's support back, or the search changes
decisions that no gradient asked for. This counts, per node position, over many seeds and both starts,
how often the recovered x keeps x0's support, for the space's code sizes and for other sizes.

    python bench/recovery.py [--seeds 40] [--sizes 7 half+3]
"""

from __future__ import annotations

import argparse
import dataclasses

from dha_pipeline.search.ista import ArchCode, select_support
from dha_pipeline.spaces.darts.genotype import DARTS_V2
from dha_pipeline.spaces.darts.settings import DartsSettings
from dha_pipeline.spaces.darts.space import SPACE
from dha_pipeline.spaces.mobilenet.settings import MobileNetSettings
from dha_pipeline.spaces.mobilenet.space import SPACE as MOBILENET

RULES = {"7": lambda n: 7, "half": lambda n: -(-n // 2), "half+3": lambda n: n // 2 + 3}


def kept_share(points: list, start: dict | None, seeds: int, lam: float) -> dict[int, float]:
    """Per point index: the share of seeds whose first recovery keeps the starting support."""
    kept: dict[int, list[bool]] = {}
    for seed in range(seeds):
        code = ArchCode(points, seed, start=start)
        proposals = code.recover(lam)
        for point in points:
            support = select_support(proposals[point.key], point.num_inputs, len(point.ops), point.keep)
            kept.setdefault(point.index, []).append(support == code.supports()[point.key])
    return {index: sum(flags) / len(flags) for index, flags in kept.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--sizes", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--lam", type=float, default=0.1, help="search.sparsity")
    args = parser.parse_args()
    print("| space | code size rule | start | m per node | kept per node | mean |")
    print("|---|---|---|---|---|---|")
    base = SPACE.decision_points(DartsSettings())
    cell = [point for point in base if point.group == "normal"]
    for rule in args.sizes:
        points = [dataclasses.replace(point, code_size=RULES[rule](point.size)) for point in cell]
        for label, start in (("DARTS-V2", SPACE.supports(DARTS_V2)), ("random", None)):
            start = None if start is None else {point.key: start[point.key] for point in points}
            shares = kept_share(points, start, args.seeds, args.lam)
            print(f"| darts (normal cell) | {rule} | {label} | {', '.join(str(p.code_size) for p in points)} | "
                  f"{', '.join(f'{v:.3f}' for v in shares.values())} | {sum(shares.values()) / len(shares):.3f} |")
    model = MobileNetSettings()
    points = MOBILENET.decision_points(model)
    shares = kept_share(points, MOBILENET.supports(MOBILENET.known_genotype("MBV2", model)), args.seeds, args.lam)
    print(f"| mobilenet | space's (4) | MBV2 | {points[0].code_size} each | min {min(shares.values()):.3f} | "
          f"{sum(shares.values()) / len(shares):.3f} |")


if __name__ == "__main__":
    main()
