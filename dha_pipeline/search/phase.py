"""The two phases of one run (docs/METHOD.md, "Schedule")."""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """WARMUP: every batch trains a uniformly drawn architecture; the codes b wait (`search.warmup_epochs`).
    SEARCH: the architecture is learned (codes b move; recovery and freezing each epoch).
    TRAIN: the architecture is fixed; the same weights train on (DA and HPO still learn)."""

    WARMUP = "warmup"
    SEARCH = "search"
    TRAIN = "train"
