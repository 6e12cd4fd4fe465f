"""Finding your way: shipped recipes by bare name, `dha recipes`, `dha --version`, and docs/RECIPES.md kept
current with the recipe's definitions."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cli.main import main
from dha_pipeline import __version__
from dha_pipeline.errors import DhaError
from dha_pipeline.recipe_reference import reference_markdown
from dha_pipeline.shipped import shipped_recipes
from dha_pipeline.stages import resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {"cifar10_darts", "cifar10_mobilenet", "digits_quickstart", "imagenet_mobilenet"}


def test_recipes_md_is_generated_from_the_definitions() -> None:
    current = (ROOT / "docs" / "RECIPES.md").read_text(encoding="utf-8")
    assert current == reference_markdown(), "stale: run python -m dha_pipeline.recipe_reference > docs/RECIPES.md"
    assert "| `train.lr_batch` | integer | `0` | [0, 16777216] |" in current
    assert '## [model] with space = "mobilenet"' in current and "| `model.width_mult` |" in current


def test_a_shipped_recipe_is_found_by_bare_name_from_any_folder(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert set(shipped_recipes()) == SHIPPED
    assert (ROOT / "recipes").resolve() == shipped_recipes()["digits_quickstart"].parent.resolve(), \
        "the checkout's recipes/ is the package's folder"
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("imagenet_mobilenet").name == "imagenet_mobilenet"
    assert resolve_recipe("digits_quickstart.toml", ["train.epochs=2"]).train.epochs == 2
    with pytest.raises(DhaError, match="digits_quickstart, imagenet_mobilenet"):
        resolve_recipe("imagenet_mobilenett")


def test_dha_recipes_lists_and_copies_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in SHIPPED) and "sized for a CPU." in listing
    assert main(["recipes", "digits_quickstart", "--to", str(tmp_path)]) == 0
    copied = tmp_path / "digits_quickstart.toml"
    assert copied.read_text() == shipped_recipes()["digits_quickstart"].read_text()
    copied.write_text("# mine\n")
    assert main(["recipes", "digits_quickstart", "--to", str(copied)]) == 2, "an existing file is kept"
    assert "--force" in capsys.readouterr().err and copied.read_text() == "# mine\n"
    assert main(["recipes", "digits_quickstart", "--to", str(copied), "--force"]) == 0
    assert copied.read_text() == shipped_recipes()["digits_quickstart"].read_text()
    assert main(["recipes", "nope"]) == 2 and not (tmp_path / "nope.toml").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"dha {__version__}"


def test_the_wheel_ships_the_recipes(tmp_path: Path) -> None:
    """A non-editable install has the recipes too (they are package data)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("dha-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {Path(name).stem for name in names if name.startswith("dha_pipeline/recipes/")} == SHIPPED
