"""Cost of each variant relative to a reference, from a log of wall times measured over several sessions.

Wall times taken on different days are not comparable here (the same run took up to 1.6x longer in
one session than in another), so every run is divided by the mean wall time of the reference
variant's runs in its own session, and only runs that had the machine to themselves (`alone` starts
with "yes") count. The log has the columns `session,variant,seed,wall_s,alone`.

    python bench/wall_costs.py docs/results/cifar10_wall_log.csv --reference nas_only
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

COLUMNS = ("session", "variant", "seed", "wall_s", "alone")


def is_clean(row: dict[str, str]) -> bool:
    """Whether the run had the machine to itself (its `alone` field starts with "yes")."""
    return row["alone"].strip().lower().startswith("yes")


def relative_costs(rows: list[dict[str, str]], reference: str) -> dict[str, list[tuple[str, int, float]]]:
    """Per variant, (session, seed, wall / mean reference wall of that session) for every clean run
    in a session that has a clean reference run."""
    clean = [row for row in rows if is_clean(row)]
    reference_walls: dict[str, list[float]] = defaultdict(list)
    for row in clean:
        if row["variant"] == reference:
            reference_walls[row["session"]].append(float(row["wall_s"]))
    costs: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
    for row in clean:
        if row["session"] in reference_walls:
            base = statistics.mean(reference_walls[row["session"]])
            costs[row["variant"]].append((row["session"], int(row["seed"]), float(row["wall_s"]) / base))
    return dict(costs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--reference", default="nas_only")
    args = parser.parse_args()
    with open(args.log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [column for column in COLUMNS if rows and column not in rows[0]]
    if not rows or missing:
        parser.error(f"{args.log}: needs a header {','.join(COLUMNS)} and rows (missing: {missing or 'rows'})")
    if not any(row["variant"] == args.reference for row in rows):
        parser.error(f"--reference {args.reference}: no such variant in {args.log}")
    sessions = sorted({row["session"] for row in rows})
    print(f"| session | clean runs | mean {args.reference} wall s | vs fastest session |")
    print("|---|---|---|---|")
    means = {}
    for session in sessions:
        walls = [float(row["wall_s"]) for row in rows if row["session"] == session
                 and row["variant"] == args.reference and is_clean(row)]
        means[session] = statistics.mean(walls) if walls else None
    fastest = min(mean for mean in means.values() if mean is not None)
    for session in sessions:
        count = sum(row["session"] == session and is_clean(row) for row in rows)
        mean = means[session]
        shown = ("-", "-") if mean is None else (f"{mean:.0f}", f"{mean / fastest:.2f}")
        print(f"| {session} | {count} | {shown[0]} | {shown[1]} |")
    print(f"\n| variant | clean runs (session:seed) | wall / {args.reference} of its session | mean |")
    print("|---|---|---|---|")
    for variant, runs in relative_costs(rows, args.reference).items():
        print(f"| {variant} | {' '.join(f'{s}:{seed}' for s, seed, _ in runs)} "
              f"| {' / '.join(f'{ratio:.2f}' for _, _, ratio in runs)} "
              f"| {statistics.mean(ratio for _, _, ratio in runs):.2f} |")


if __name__ == "__main__":
    main()
