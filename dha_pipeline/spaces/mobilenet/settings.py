"""The `[model]` keys of the MobileNet space, and their rules across keys."""

from __future__ import annotations

from dataclasses import dataclass

from dha_pipeline.errors import DhaError
from dha_pipeline.settings import setting
from dha_pipeline.spaces.settings import ModelSettings, Stem


@dataclass
class MobileNetSettings(ModelSettings):
    """The macro structure: width, stages, head and stem (the per-layer choices are searched)."""

    width_mult: float = setting(1.0, low=0.05, high=4.0, help="channel multiplier (rounded to 8s)")
    stage_channels: list[int] = setting([24, 40, 80, 96, 192, 320], help="output channels per stage")
    stage_depths: list[int] = setting([4, 4, 4, 4, 4, 1], help="searchable layers per stage")
    stage_strides: list[int] = setting([2, 2, 2, 1, 2, 1], help="stride of each stage's first layer")
    head_channels: int = setting(1280, low=8, high=16_384, help="channels of the 1x1 conv before pooling")
    stem: Stem = setting("auto", help="small: stride-1 stem; large: stride-2 ImageNet stem; auto: by image size")

    def validate(self) -> None:
        """The stage lists describe the same stages, with sensible values."""
        lists = {"stage_channels": self.stage_channels, "stage_depths": self.stage_depths,
                 "stage_strides": self.stage_strides}
        if len({len(values) for values in lists.values()}) != 1 or not self.stage_channels:
            raise DhaError("recipe keys 'model.stage_channels', 'model.stage_depths' and 'model.stage_strides' must "
                           "be non-empty lists of one length", "give one entry per stage in each")
        checks = {"stage_channels": (lambda v: 1 <= v <= 16_384, "1..16384"),
                  "stage_depths": (lambda v: 0 <= v <= 64, "0..64"),
                  "stage_strides": (lambda v: v in (1, 2), "1 or 2")}
        for key, (valid, allowed) in checks.items():
            bad = [v for v in lists[key] if not valid(v)]
            if bad:
                raise DhaError(f"recipe key 'model.{key}' = {lists[key]} holds {bad[0]}",
                               f"each entry must be {allowed}")
        if sum(self.stage_depths) == 0:
            raise DhaError("recipe key 'model.stage_depths' has no layer at all", "give at least one stage depth >= 1")


SETTINGS = MobileNetSettings
