"""The toy space's `[model]` keys."""

from __future__ import annotations

from dataclasses import dataclass

from dha_pipeline.settings import setting
from dha_pipeline.spaces.settings import ModelSettings


@dataclass
class ToySettings(ModelSettings):
    """How wide the one searched convolution is."""

    width: int = setting(8, low=1, high=64, help="channels of the searched convolution")


SETTINGS = ToySettings
