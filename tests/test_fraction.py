"""p, the augmented share of each batch: its update rule, its split of a batch, and that it moves the right way
in the loop on constructed cases where augmentation plainly hurts or plainly helps the clean held-out loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dha_pipeline.data.cache import build_dataset
from dha_pipeline.recipe import AugmentConfig, recipe_from_dict
from dha_pipeline.search import loop
from dha_pipeline.checkpoint import load_checkpoint
from dha_pipeline.search.fraction import LOGIT_BOUND, FractionLearner
from dha_pipeline.search.run import run_search


def _learner(**settings: object) -> FractionLearner:
    return FractionLearner(AugmentConfig(**{"fraction_start": 0.5, "fraction_lr": 0.5, **settings}), global_batch=64)


def test_paper_form_augments_every_sample_and_never_learns() -> None:
    paper = _learner(form="paper")
    assert paper.value == 1.0 and not paper.learned
    assert paper.split(64, torch.Generator().manual_seed(0), hyper_step=False) is None
    assert not paper.due(0, 64)


def test_split_draws_p_per_sample_and_keeps_both_parts_on_hyper_steps() -> None:
    learner = _learner(fraction_start=0.25)
    generator = torch.Generator().manual_seed(0)
    counts = [len(learner.split(64, generator, hyper_step=False)[0]) for _ in range(400)]
    assert sum(counts) / (400 * 64) == pytest.approx(0.25, abs=0.01)
    augmented, clean = learner.split(64, generator, hyper_step=False)
    assert sorted(torch.cat([augmented, clean]).tolist()) == list(range(64))
    low = _learner(fraction_start=1e-4)
    augmented, clean = low.split(64, generator, hyper_step=True)
    assert len(augmented) == 64 // 16 and len(clean) == 64 - 64 // 16


@pytest.mark.parametrize("helps", [True, False])
def test_rule_follows_the_sign_of_the_held_out_gradient_along_g_aug_minus_g_clean(helps: bool) -> None:
    """g_val aligned with g_aug - g_clean: augmenting more lowers the held-out loss, p rises; anti-aligned: p falls."""
    learner = _learner()
    g_aug, g_clean = torch.tensor([1.0, 0.0, 0.2]), torch.tensor([0.0, 1.0, 0.2])
    n, n_aug = 8, 3
    batch = (n_aug * g_aug + (n - n_aug) * g_clean) / n  # the mean loss's gradient
    g_val = (g_aug - g_clean) * (1 if helps else -1) + torch.tensor([0.0, 0.0, 0.5])
    start = learner.value
    for _ in range(3):
        learner.remember([g_aug * n_aug, None], [batch, None], n_aug, n)
        cosine = learner.move([g_val, torch.ones(2)])
        assert (cosine > 0) == helps
    assert (learner.value > start) == helps
    assert learner.log_rows(1)[0]["fraction_cosine"] == pytest.approx(cosine)
    for _ in range(100):  # bounded: p can always come back
        learner.remember([g_aug * n_aug], [batch], n_aug, n)
        learner.move([g_val])
    assert abs(learner.logit) == LOGIT_BOUND


def test_state_round_trip() -> None:
    learner = _learner()
    learner.remember([torch.ones(2)], [torch.zeros(2)], 1, 4)
    learner.move([torch.tensor([1.0, 0.5])])
    restored = _learner()
    restored.load_state_dict(learner.state_dict())
    assert restored.value == learner.value and restored.state_dict() == learner.state_dict()


def _raw(tmp_path: Path) -> dict:
    return {"name": "fraction", "runs_dir": str(tmp_path / "runs"), "device": "cpu",
            "data": {"image_size": 8, "channels": "1", "train_subset": 400},
            "model": {"init_channels": 4, "layers": 3},
            "train": {"epochs": 3, "batch_size": 64},
            "augment": {"crop_padding": 0, "hflip": False, "form": "learned_fraction", "fraction_start": 0.5,
                        "fraction_lr": 1.0, "fraction_every": 1, "fraction_data": "val"},
            "search": {"mode": "manual", "components": ["da"]}}


@pytest.fixture(scope="module")
def digits8():  # type: ignore[no-untyped-def]
    return build_dataset(recipe_from_dict(_raw(Path("unused"))).data)


def test_p_falls_when_the_augmented_images_hurt_the_clean_held_out_loss(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    run = loop.SearchRun(recipe_from_dict(_raw(tmp_path)), digits8)
    noise = torch.Generator().manual_seed(1)
    run.policy.apply = lambda images, sample: torch.rand(images.shape, generator=noise)  # destroys the digit
    run.run()
    assert run.fraction.value < 0.2
    assert [row["aug_fraction"] for row in run.logs["hparams"]] == [row["aug_fraction"] for row in run.history]


def test_p_rises_when_the_augmented_images_are_what_the_held_out_images_look_like(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    run = loop.SearchRun(recipe_from_dict(_raw(tmp_path)), digits8)
    run.source.splits["val"].x = 255 - run.source.splits["val"].x  # held-out digits are inverted ...
    run.policy.apply = lambda images, sample: 1.0 - images  # ... and so are the augmented ones
    run.run()
    assert run.fraction.value > 0.8


def test_p_is_checkpointed_and_reported(tmp_path: Path, digits8) -> None:  # type: ignore[no-untyped-def]
    recipe = recipe_from_dict({**_raw(tmp_path), "train": {"epochs": 1, "batch_size": 64}})
    outcome = run_search(recipe, digits8)
    state = load_checkpoint(outcome.checkpoint)
    p = 1 / (1 + math.exp(-state["learners"]["p"]["logit"]))
    assert p != 0.5 and outcome.history[-1]["aug_fraction"] == pytest.approx(p)
    augment = json.loads(recipe.layout.summary.read_text())["hyperparameters"]["augment"]
    assert augment == {"form": "learned_fraction", "fraction": pytest.approx(p), "learned": True,
                       "measured_on": "val"}
    resumed = loop.SearchRun(recipe, digits8)
    assert resumed.restore() and resumed.fraction.value == pytest.approx(p)
