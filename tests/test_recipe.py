"""Recipe loading, validation with key paths, --set overrides, resolved output."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dha_pipeline.errors import DhaError
from dha_pipeline.recipe import apply_overrides, load_recipe, recipe_from_dict, save_resolved

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_recipe_validates() -> None:
    recipes = sorted((ROOT / "recipes").glob("*.toml"))
    assert recipes, "no recipes shipped"
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.name == path.stem


def test_defaults_and_types() -> None:
    recipe = recipe_from_dict({"name": "x", "train": {"lr_min": 0}})
    assert recipe.train.lr_min == 0.0 and isinstance(recipe.train.lr_min, float)
    assert recipe.search.mode == "joint" and recipe.search.components == ["nas", "da", "hpo"]
    assert recipe.data.dataset == "digits"
    assert recipe.layout.root == Path("runs/x") and recipe.layout.exports.root == Path("exports/x")


@pytest.mark.parametrize("raw, expected", [
    ({"trian": {}}, ["unknown recipe key 'trian'", "did you mean 'train'"]),
    ({"train": {"epoch": 3}}, ["'train.epoch'", "did you mean 'train.epochs'"]),
    ({"train": {"zzzz": 3}}, ["'train.zzzz'", "valid keys", "train.epochs"]),
])
def test_unknown_key_names_path_and_closest(raw: dict, expected: list[str]) -> None:
    with pytest.raises(DhaError) as info:
        recipe_from_dict(raw)
    for fragment in expected:
        assert fragment in str(info.value)


@pytest.mark.parametrize("raw, fragments", [
    ({"train": {"epochs": "ten"}}, ["'train.epochs'", "'ten'", "expected integer"]),
    ({"train": {"epochs": 2.5}}, ["'train.epochs'", "expected integer"]),
    ({"augment": {"hflip": 1}}, ["'augment.hflip'", "expected boolean"]),
    ({"train": {"epochs": -1}}, ["'train.epochs'", "-1", "allowed range: [1, 10000]"]),
    ({"train": {"lr": 0.0}}, ["'train.lr'", "allowed range"]),
    ({"device": "tpu"}, ["'device'", "'tpu'", "'auto'"]),
    ({"data": {"channels": "2"}}, ["'data.channels'", "allowed"]),
    ({"export": {"formats": "onnx"}}, ["'export.formats'", "list"]),
    ({"data": 3}, ["'data'", "table"]),
    ({"name": "a/b"}, ["'name'", "not a valid run name"]),
])
def test_bad_values_name_key_value_and_allowed(raw: dict, fragments: list[str]) -> None:
    with pytest.raises(DhaError) as info:
        recipe_from_dict(raw)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_channels_accepts_integer() -> None:
    assert recipe_from_dict({"data": {"channels": 3}}).data.channels == "3"


def test_overrides_parse_toml_values_and_bare_strings() -> None:
    raw = apply_overrides({}, ["train.epochs=7", "data.dataset=npz:/tmp/x.npz", "train.lr=1e-2",
                               "augment.hflip=false", 'export.formats=["onnx"]'])
    recipe = recipe_from_dict(raw)
    assert recipe.train.epochs == 7 and recipe.train.lr == 0.01 and recipe.augment.hflip is False
    assert recipe.data.dataset == "npz:/tmp/x.npz" and recipe.export.formats == ["onnx"]


@pytest.mark.parametrize("override", ["train.epochs", "=3", "seed.x=1"])
def test_malformed_override(override: str) -> None:
    with pytest.raises(DhaError):
        apply_overrides({"seed": 0}, [override])


def test_override_unknown_key_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('name = "r"\n')
    with pytest.raises(DhaError, match="did you mean 'train.epochs'"):
        load_recipe(path, ["train.epoch=3"])


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DhaError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n[train\n")
    with pytest.raises(DhaError, match="not valid TOML"):
        load_recipe(bad)


def test_resolved_recipe_round_trips_with_hash(tmp_path: Path) -> None:
    recipe = recipe_from_dict({"name": "r", "runs_dir": str(tmp_path), "train": {"epochs": 4}})
    written = save_resolved(recipe)
    assert written == tmp_path / "r" / "recipe.resolved.toml"
    reloaded = load_recipe(written)
    assert reloaded == recipe
    assert (tmp_path / "r" / "recipe.sha256").read_text().strip() == recipe.sha256
    assert tomllib.loads(written.read_text())["train"]["epochs"] == 4


def test_section_hash_changes_only_with_its_section() -> None:
    base = recipe_from_dict({})
    other_export = recipe_from_dict({"export": {"opset": 19}})
    other_train = recipe_from_dict({"train": {"epochs": 3}})
    assert base.section_sha256("train") == other_export.section_sha256("train")
    assert base.section_sha256("train") != other_train.section_sha256("train")
    assert base.sha256 != other_export.sha256


@pytest.mark.parametrize("raw, fragment", [
    ({"search": {"components": ["nas", "magic"]}}, "'search.components[1]' = 'magic' is not allowed"),
    ({"search": {"components": ["nas", "nas"]}}, "repeats"),
    ({"search": {"mode": "manual", "components": ["nas"]}}, "cannot be a component"),
    ({"search": {"mode": "joint", "components": ["da"]}}, "needs 'nas'"),
    ({"hpo": {"lr_low": 0.1, "lr_high": 0.01}}, "lower bound"),
    ({"train": {"lr": 2.0}}, "outside [hpo.lr_low, hpo.lr_high]"),
    ({"augment": {"trivial_augment": True, "start": "trivial_wide"}}, "both apply TrivialAugment Wide"),
    ({"train": {"epochs": 3, "warmup_epochs": 3}}, "would rise for the whole run"),
])
def test_rules_across_keys(raw: dict, fragment: str) -> None:
    with pytest.raises(DhaError) as info:
        recipe_from_dict(raw)
    assert fragment in str(info.value)


def test_manual_mode_may_learn_da_and_hpo() -> None:
    recipe = recipe_from_dict({"search": {"mode": "manual", "components": ["da", "hpo"]}})
    assert recipe.search.components == ["da", "hpo"]


def test_an_unknown_search_space_is_one_error_listing_the_known_ones() -> None:
    with pytest.raises(DhaError) as info:
        recipe_from_dict({"model": {"space": "mobilenet_v9"}})
    assert "model.space" in str(info.value) and "'darts'" in str(info.value)
    assert recipe_from_dict({"model": {"space": "darts"}}).model.space == "darts"


def test_model_keys_belong_to_the_chosen_space() -> None:
    """[model] holds the chosen space's own settings: users write them there, each space checks its own keys
    and rules, and a key of another space is the unknown-key error with the closest valid key."""
    mobile = recipe_from_dict({"model": {"space": "mobilenet", "width_mult": 0.5, "stage_depths": [1, 2, 1, 1, 1, 1]}})
    assert type(mobile.model).__name__ == "MobileNetSettings" and mobile.model.width_mult == 0.5
    model = mobile.to_dict()["model"]
    assert model["stage_depths"] == [1, 2, 1, 1, 1, 1] and "init_channels" not in model
    assert recipe_from_dict(mobile.to_dict()) == mobile, "the resolved recipe round-trips"
    with pytest.raises(DhaError, match="unknown recipe key 'model.width_mult'.*model.init_channels"):
        recipe_from_dict({"model": {"space": "darts", "width_mult": 0.5}})
    with pytest.raises(DhaError, match="did you mean 'model.stage_depths'"):
        recipe_from_dict({"model": {"space": "mobilenet", "stage_depth": [1]}})
    with pytest.raises(DhaError, match="'model.stage_depths' has no layer at all"):
        recipe_from_dict({"model": {"space": "mobilenet", "stage_depths": [0, 0, 0, 0, 0, 0]}})
    with pytest.raises(DhaError, match="'model.stem' = 'huge' is not allowed"):
        recipe_from_dict({"model": {"stem": "huge"}})
    assert recipe_from_dict({}).model.auxiliary_loss_weight == 0.4, "the default space is the cell space"
    assert mobile.model.auxiliary_loss_weight == 0.0, "a space without an auxiliary head weighs none"


def test_tensorboard_on_without_the_package_is_one_error_with_the_install_command(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(DhaError, match=r'pip install -e "\.\[tensorboard\]"'):
        recipe_from_dict({"search": {"tensorboard": "on"}})
    assert recipe_from_dict({"search": {"tensorboard": "auto"}}).search.tensorboard == "auto"
