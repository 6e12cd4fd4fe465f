"""The seams of docs/ARCHITECTURE.md, checked on the source: no module imports one on a higher layer, and
nothing outside spaces/ names a particular space. Every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dha_pipeline.spaces.registry import SPACES

ROOT = Path(__file__).resolve().parents[1]
LAYERS: list[set[str]] = [
    {"errors", "fileio", "preprocess", "settings", "choices", "device", "metrics", "figures", "checkpoint",
     "progress", "distributed", "launch", "shipped"},
    {"spaces", "augment"},
    {"formats"},
    {"layout"},
    {"recipe", "recipe_reference"},
    {"data", "latency", "report"},
    {"scoring", "search"},
    {"derive"},
    {"export", "evaluate", "predict"},
    {"benchmark", "smoke"},
    {"stages"},
    {"runs_index"},
]
"""dha_pipeline's packages and modules, lowest first: each may import its own layer and those below."""
FORBIDDEN = {("report", "spaces")}
"""Imports the layers alone would allow but the design does not: what a card shows of the network comes from
the export's metadata."""
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def imports(path: Path) -> list[str]:
    """Every dha_pipeline module `path` imports, at any depth of its code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name.startswith("dha_pipeline.")]


def unit_of(module: str) -> str:
    """The top-level package or module of dha_pipeline a dotted name belongs to."""
    return module.split(".")[1]


def test_every_unit_has_a_layer() -> None:
    units = {path.relative_to(ROOT / "dha_pipeline").parts[0].removesuffix(".py")
             for path in (ROOT / "dha_pipeline").rglob("*.py")} - {"__init__"}
    assert units == set(LAYER), "give a new module or package its layer here and in docs/ARCHITECTURE.md"


def test_no_module_imports_a_higher_layer() -> None:
    offenders = []
    for path in (ROOT / "dha_pipeline").rglob("*.py"):
        source = path.relative_to(ROOT / "dha_pipeline").parts[0].removesuffix(".py")
        if source == "__init__":
            continue
        for module in imports(path):
            target = unit_of(module)
            if target != source and (LAYER[target] > LAYER[source] or (source, target) in FORBIDDEN):
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offenders == []


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "formats_like.py"
    module.write_text("def load():\n    from dha_pipeline.export.exporter import export_child\n")
    assert [unit_of(name) for name in imports(module)] == ["export"]
    assert LAYER["export"] > LAYER["formats"]


@pytest.mark.parametrize("space", sorted(SPACES))
def test_nothing_outside_spaces_imports_a_particular_space(space: str) -> None:
    """The loop, derive, export, reports and the CLI reach a space through the registry only."""
    package = SPACES[space]
    offenders = []
    for path in [*(ROOT / "dha_pipeline").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]:
        if "spaces" in path.relative_to(ROOT).parts:
            continue
        offenders += [f"{path.relative_to(ROOT)}: {module}" for module in imports(path)
                      if module == package or module.startswith(package + ".")]
    assert offenders == []
