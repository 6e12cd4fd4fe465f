"""matplotlib on the Agg backend, and atomic PNG writes: what every module that draws a figure shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dha_pipeline.fileio import write_with

DPI = 110


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> None:
    """Write `fig` as a PNG (temp file, then rename) and close it."""
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    pyplot().close(fig)
