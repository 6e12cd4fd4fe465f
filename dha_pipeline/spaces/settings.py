"""What every space's `[model]` settings share: the space's name and the known genotype manual mode trains.

Each space declares its own settings as a dataclass deriving from `ModelSettings`, in its package's
`settings.py` (no torch there: a recipe is validated before anything heavy is imported), and checks
the rules across its keys in `validate`. Users write every key under `[model]`; a key the chosen space
does not have (another space's key included) is the usual unknown-key error with the closest valid key.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Any, Literal

from dha_pipeline.settings import coerce, setting
from dha_pipeline.spaces.registry import space_names, space_settings

DEFAULT_SPACE = "darts"
Stem = Literal["auto", "small", "large"]
"""A network's stem: small (CIFAR: no early downsampling), large (ImageNet: stride 2), auto (by image size)."""


@dataclass
class ModelSettings:
    """The keys of `[model]` every space has."""

    space: str = setting(DEFAULT_SPACE, help="the search space: a name registered in spaces/registry.py")
    genotype: str = setting("auto", help="a known genotype of the space (manual mode); auto = the space's default")

    @property
    def auxiliary_loss_weight(self) -> float:
        """Weight of an auxiliary head's loss in training; 0 where the space's networks have none."""
        return 0.0

    def validate(self) -> None:
        """Rules across this space's keys: one user error naming the key (nothing to check here)."""


def settings_class(raw: dict[str, Any], path: str) -> type[ModelSettings]:
    """The settings dataclass of the space a raw `[model]` table names (the default space when it names
    none); an unregistered name is one error listing the registered ones."""
    name = coerce(f"{path}.space", raw.get("space", DEFAULT_SPACE), str, {"choices": space_names()})
    return space_settings(name)


def default_settings() -> ModelSettings:
    """The `[model]` settings of a recipe that has none: the default space's defaults."""
    return space_settings(DEFAULT_SPACE)()
