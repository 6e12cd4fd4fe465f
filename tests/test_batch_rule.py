"""The learning rate follows the global batch by the linear rule, with lr_min and HPO's lr bounds."""

from __future__ import annotations

import pytest

from dha_pipeline.recipe import HpoConfig, TrainConfig
from dha_pipeline.search.batch_rule import batch_scaled


def test_a_smaller_batch_scales_lr_lr_min_and_the_hpo_bounds_linearly() -> None:
    train = TrainConfig(batch_size=32, lr=0.4, lr_batch=1024, lr_min=0.004, weight_decay=4e-5)
    hpo = HpoConfig(lr_low=1e-3, lr_high=1.0)
    scaled_train, scaled_hpo, rule = batch_scaled(train, hpo, 32)
    assert rule.factor == 1 / 32 and scaled_train.lr == pytest.approx(0.0125)
    assert scaled_train.lr_min == pytest.approx(0.004 / 32) and scaled_train.weight_decay == 4e-5
    assert (scaled_hpo.lr_low, scaled_hpo.lr_high) == (pytest.approx(1e-3 / 32), pytest.approx(1 / 32))
    assert "0.0125 = train.lr 0.4 x global batch 32 / train.lr_batch 1024" in rule.describe()
    assert train.lr == 0.4, "the recipe's own settings are not changed"


@pytest.mark.parametrize("lr_batch, batch", [(64, 64), (0, 64), (0, 1000)])
def test_the_stated_batch_or_none_keeps_the_recipe_lr(lr_batch: int, batch: int) -> None:
    train, hpo = TrainConfig(batch_size=batch, lr=0.05, lr_batch=lr_batch), HpoConfig()
    scaled_train, scaled_hpo, rule = batch_scaled(train, hpo, batch)
    assert (scaled_train, scaled_hpo) == (train, hpo) and rule.factor == 1.0
    assert rule.as_dict()["lr"] == 0.05 and "stated for this global batch" in rule.describe()


def test_the_batch_actually_used_decides() -> None:
    """A batch capped at a small train split scales the lr by the batch that runs, not the one asked for."""
    _, _, rule = batch_scaled(TrainConfig(batch_size=256, lr=0.1, lr_batch=256), HpoConfig(), 100)
    assert rule.lr == pytest.approx(0.1 * 100 / 256) and rule.as_dict()["global_batch"] == 100
