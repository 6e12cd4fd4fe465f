"""The search spaces by name (`model.space` in a recipe).

Only names and module paths live here, so a recipe can be validated without importing torch;
a space's module is imported when the space is first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dha_pipeline.errors import DhaError

if TYPE_CHECKING:
    from dha_pipeline.spaces.base import SearchSpace

SPACES: dict[str, str] = {
    "darts": "dha_pipeline.spaces.darts",
    "mobilenet": "dha_pipeline.spaces.mobilenet",
}
"""Space name -> the module whose `SPACE` attribute implements it."""


def space_names() -> tuple[str, ...]:
    """Every known space, in registration order."""
    return tuple(SPACES)


def get_space(name: str) -> SearchSpace:
    """The space registered under `name`, or one user error listing the known ones."""
    if name not in SPACES:
        raise DhaError(f"unknown search space '{name}'", "use model.space = one of: " + ", ".join(SPACES))
    return importlib.import_module(SPACES[name]).SPACE
