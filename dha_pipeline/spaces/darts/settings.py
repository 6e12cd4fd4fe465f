"""The `[model]` keys of the cell space."""

from __future__ import annotations

from dataclasses import dataclass

from dha_pipeline.settings import setting
from dha_pipeline.spaces.settings import ModelSettings, Stem


@dataclass
class DartsSettings(ModelSettings):
    """Width, depth, stem and the training-only parts of a network of cells."""

    init_channels: int = setting(16, low=4, high=256, help="channels of the first cells")
    layers: int = setting(8, low=3, high=30, help="cells in all (two of them reduction cells)")
    stem: Stem = setting("auto", help="small: CIFAR stem; large: ImageNet stem; auto: by image size")
    auxiliary: bool = setting(False, help="an auxiliary classifier head during training")
    auxiliary_weight: float = setting(0.4, low=0.0, high=10.0, help="weight of the auxiliary head's loss")
    drop_path: float = setting(0.0, low=0.0, high=0.9, help="drop-path probability during training")
    max_parameter_free: int = setting(-1, low=-1, high=8, help="the search keeps at most this many parameter-free "
                                                                "ops (pools, skip) in the normal cell; -1 = no cap")

    @property
    def auxiliary_loss_weight(self) -> float:
        """`auxiliary_weight` (the head exists only with `auxiliary`)."""
        return self.auxiliary_weight


SETTINGS = DartsSettings
