"""The recipes shipped inside the package (`dha_pipeline/recipes/*.toml`, also `recipes/` in a checkout): found by
bare name from any folder (`dha run imagenet_mobilenet`), listed and copied out by `dha recipes`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_text


def shipped_recipes() -> dict[str, Path]:
    """Every shipped recipe by name, sorted."""
    folder = resources.files("dha_pipeline") / "recipes"
    return {Path(item.name).stem: Path(str(item)) for item in sorted(folder.iterdir(), key=lambda item: item.name)
            if item.name.endswith(".toml")}


def describe(path: Path) -> str:
    """The first sentence of a recipe's header comment: what it is for."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("# ") or line.startswith("#  "):  # the header's prose ends at a command or a key
            break
        words.append(line[2:].strip())
    text = " ".join(words)
    return text.split(". ")[0].rstrip(".:") + "." if text else ""


def is_bare_name(target: str | Path) -> bool:
    """A word without a folder (`imagenet_mobilenet`, or `imagenet_mobilenet.toml`) that is not a file here."""
    text = str(target)
    return not Path(text).exists() and "/" not in text and "\\" not in text and Path(text).suffix in ("", ".toml")


def shipped_recipe(name: str) -> Path:
    """The shipped recipe called `name` (with or without .toml), or one user error listing them."""
    recipes = shipped_recipes()
    stem = Path(name).stem
    if stem not in recipes:
        raise DhaError(f"'{name}' is neither a recipe file nor a shipped recipe",
                       "pass a path to a .toml, or one of: " + ", ".join(recipes) + " (dha recipes lists them)")
    return recipes[stem]


def copy_recipe(name: str, destination: Path, *, force: bool = False) -> Path:
    """Write shipped recipe `name` to `destination` (a file, or a folder to put <name>.toml in); returns the
    file written. An existing file is kept unless `force`."""
    source = shipped_recipe(name)
    target = destination / source.name if destination.is_dir() else destination
    if target.exists() and not force:
        raise DhaError(f"'{target}' exists", "pass --force to replace it, or another destination")
    write_text(target, source.read_text(encoding="utf-8"))
    return target
