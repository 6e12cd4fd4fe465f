"""bench/cifar10_equal_cost.py and bench/plot_equal_cost.py: which settings each arm runs, and the figure."""

from __future__ import annotations

import sys

from conftest import BENCH, load_bench_script
from PIL import Image

from dha_pipeline.recipe import load_recipe


def test_each_ablation_arm_switches_exactly_one_new_setting_off(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports its siblings
    bench = load_bench_script("cifar10_equal_cost")
    new = set(bench.ARMS["nas_only_new"][1])
    assert new == {*bench.NEW.values(), bench.REDRAW} and bench.ARMS["dha_new"][1] == bench.ARMS["nas_only_new"][1]
    for arm, off in (("no_target", "target"), ("random_init", "init"), ("no_cap", "cap")):
        variant, lines = bench.ARMS[arm]
        assert variant == "nas_only" and new - set(lines) == {bench.NEW[off]} and set(lines) - new == {bench.OFF[off]}
    variant, lines = bench.ARMS["no_warmup"]
    assert new - set(lines) == {bench.NEW["warmup"], bench.REDRAW} and set(lines) - new == {bench.OFF["warmup"]}
    for arm, redraw in (("still_warmup", "0"), ("uniform_warmup", "1.0")):
        assert set(bench.ARMS[arm][1]) - new == {f"search.warmup_redraw={redraw}"}
    recipe = load_recipe(BENCH.parent / "recipes" / "cifar10_darts.toml", [*bench.ARMS["nas_only_new"][1]])
    assert (recipe.search.target, recipe.search.init, recipe.model.max_parameter_free) == ("params", "known", 2)
    assert recipe.search.warmup_epochs > 0 and recipe.search.warmup_redraw == 0.25
    for arm, (_, lines) in bench.ARMS.items():  # every arm's lines are valid overrides of the protocols' recipe
        assert load_recipe(BENCH.parent / "recipes" / "cifar10_darts.toml", lines).name, arm


def test_the_plot_draws_every_protocol_of_the_csv(tmp_path, monkeypatch):
    plot = load_bench_script("plot_equal_cost")
    csv_path = tmp_path / "rows.csv"
    rows = ["protocol,arm,seed,top1,latency_ms,params", "A,manual,0,0.51,1.2,77122", "A,manual_small,0,0.47,0.8,40000",
            "A,nas_only_new,0,0.52,1.1,76000", "M,manual,0,0.46,0.5,495690"]
    csv_path.write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(sys, "argv", ["plot_equal_cost.py", str(csv_path), "--out", str(tmp_path)])
    plot.main()
    for protocol in ("A", "M"):
        with Image.open(tmp_path / f"equal_cost_{protocol}.png") as image:
            assert image.size[0] > image.size[1] > 300, "two panels side by side"
