"""The learning rate follows the global batch: a recipe states `train.lr` for the global batch it was tuned for
(`train.lr_batch`), and a run at another global batch uses lr x batch / lr_batch (the linear scaling rule of
Goyal et al. 2017; timm states a base lr per 256 images the same way). `lr_min` and HPO's lr bounds move by the
same factor, so a learned lr keeps its room on both sides. `lr_batch = 0` takes `train.lr` as it is."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dha_pipeline.recipe import HpoConfig, TrainConfig


@dataclass(frozen=True)
class BatchScaledLr:
    """How a run's learning rate was derived from the recipe's."""

    stated: float
    """`train.lr` as the recipe states it."""
    tuned_batch: int
    """The global batch the stated lr is for (`train.lr_batch`, or the run's own batch when that is 0)."""
    batch: int
    """The run's global batch (`train.batch_size`, at most the train split)."""

    @property
    def factor(self) -> float:
        """batch / tuned_batch: what the stated lr, lr_min and HPO's lr bounds are multiplied by."""
        return self.batch / self.tuned_batch

    @property
    def lr(self) -> float:
        """The base learning rate the run starts from."""
        return self.stated * self.factor

    def describe(self) -> str:
        """One line for the console: the lr used and how it was derived."""
        if self.factor == 1.0:
            return f"learning rate {self.lr:.4g} (train.lr, stated for this global batch of {self.batch})"
        return (f"learning rate {self.lr:.4g} = train.lr {self.stated:.4g} x global batch {self.batch} / "
                f"train.lr_batch {self.tuned_batch} (linear rule)")

    def as_dict(self) -> dict[str, Any]:
        """The derivation, for the summary and the model's metadata."""
        return {"lr": self.lr, "stated_lr": self.stated, "stated_for_batch": self.tuned_batch,
                "global_batch": self.batch, "factor": self.factor, "rule": "linear"}


def batch_scaled(train: TrainConfig, hpo: HpoConfig, global_batch: int
                 ) -> tuple[TrainConfig, HpoConfig, BatchScaledLr]:
    """The train and HPO settings a run at `global_batch` uses, and how its lr was derived."""
    rule = BatchScaledLr(train.lr, train.lr_batch or global_batch, global_batch)
    if rule.factor == 1.0:
        return train, hpo, rule
    scaled_train = replace(train, lr=rule.lr, lr_min=train.lr_min * rule.factor)
    scaled_hpo = replace(hpo, lr_low=hpo.lr_low * rule.factor, lr_high=hpo.lr_high * rule.factor)
    return scaled_train, scaled_hpo, rule
