"""TensorBoard logging of a search run (optional: `pip install -e ".[tensorboard]"`; `search.tensorboard`).

Per epoch, every number of the epoch's history row (losses, top-1, eta, the scheduled lr, p, the policy's
entropy and KL to its start, seconds) and the count of frozen decision points; at the end of the run the
run's plots (policy heatmap, architecture weights, learning curves, ...) as images and the run's settings as
hparams with its final metrics. Written by the main process only, to runs/<name>/tensorboard/; a resumed
run purges the events after the epoch it resumes from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dha_pipeline.recipe import tensorboard_installed


def wanted(setting: str) -> bool:
    """Whether to log: 'on' (the recipe's check has made sure tensorboard is installed), 'auto' (when it is
    installed) or 'off'."""
    return setting != "off" and tensorboard_installed()


def _scalar_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The recipe's settings flattened to 'section.key' -> a number, string or bool (lists joined)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_scalar_settings(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            flat[f"{prefix}{key}"] = ",".join(map(str, value))
        elif isinstance(value, (int, float, str, bool)):
            flat[f"{prefix}{key}"] = value
    return flat


class TensorBoardLog:
    """One run's event files."""

    def __init__(self, directory: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(directory), purge_step=purge_step)

    def epoch(self, row: dict[str, Any], frozen: int | None) -> None:
        """The epoch's numbers under epoch/<field>, at step = the epoch (1-based)."""
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"epoch/{key}", value, step)
        if frozen is not None:
            self.writer.add_scalar("epoch/frozen_points", frozen, step)
        self.writer.flush()

    def finish(self, plots: list[Path], settings: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """The run's plots as images, and its settings as hparams with `metrics`; then close."""
        for path in plots:
            if path.is_file():
                image = np.asarray(Image.open(path).convert("RGB"))
                self.writer.add_image(f"plots/{path.stem}", image, step, dataformats="HWC")
        self.writer.add_hparams(_scalar_settings(settings), {f"hparam/{key}": value for key, value in metrics.items()},
                                run_name=".")
        self.writer.close()

    def close(self) -> None:
        """Close without the end-of-run records (an interrupted run)."""
        self.writer.close()
