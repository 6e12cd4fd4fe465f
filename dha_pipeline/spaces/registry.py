"""The search spaces by name (`model.space` in a recipe).

A space is a package under `spaces/` with two modules: `settings.py`, whose `SETTINGS` is the
dataclass of its `[model]` keys (importing no torch, so a recipe is validated cheaply), and
`space.py`, whose `SPACE` implements `spaces.base.SearchSpace`. Only names and package paths live
here; a space's modules are imported when first asked for. Adding a space is a package and one line
in `SPACES`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dha_pipeline.errors import DhaError

if TYPE_CHECKING:
    from dha_pipeline.spaces.base import SearchSpace
    from dha_pipeline.spaces.settings import ModelSettings

SPACES: dict[str, str] = {
    "darts": "dha_pipeline.spaces.darts",
    "mobilenet": "dha_pipeline.spaces.mobilenet",
}
"""Space name -> the package holding its `settings` and `space` modules."""


def space_names() -> tuple[str, ...]:
    """Every known space, in registration order."""
    return tuple(SPACES)


def _module(name: str, part: str) -> Any:
    if name not in SPACES:
        raise DhaError(f"unknown search space '{name}'", "use model.space = one of: " + ", ".join(SPACES))
    return importlib.import_module(f"{SPACES[name]}.{part}")


def get_space(name: str) -> SearchSpace:
    """The space registered under `name`, or one user error listing the known ones."""
    return _module(name, "space").SPACE


def space_settings(name: str) -> type[ModelSettings]:
    """The dataclass of the `[model]` settings of the space registered under `name`."""
    return _module(name, "settings").SETTINGS
