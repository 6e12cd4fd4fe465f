"""The latency table: blocks measured once with onnxruntime, cached per machine, summed into a prediction,
and used as a search budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dha_pipeline.errors import DhaError
from dha_pipeline.latency import OVERHEAD_KEY, LatencyTable, backbone_signature, complete_table
from dha_pipeline.recipe import SearchConfig
from dha_pipeline.spaces.darts.settings import DartsSettings
from dha_pipeline.spaces.mobilenet.settings import MobileNetSettings
from dha_pipeline.search.architecture import ChildCost, within_budget
from dha_pipeline.spaces.base import DataShape
from dha_pipeline.spaces.darts.space import SPACE as DARTS
from dha_pipeline.spaces.mobilenet.space import SPACE
from dha_pipeline.spaces.mobilenet.genotype import MobileGenotype

SMALL = MobileNetSettings(space="mobilenet", width_mult=0.25, stage_channels=[16, 24], stage_depths=[2, 1],
                          stage_strides=[1, 2], head_channels=16, stem="small")
SHAPE = DataShape(num_classes=3, channels=3, image_size=8)


def test_blocks_cover_every_choice_and_a_network_uses_its_own(tmp_path: Path) -> None:
    every = SPACE.latency_blocks(SMALL, SHAPE, None)
    # stem, 6 MBConv choices for each of the 3 layers (a skip costs nothing, so it has no block), head;
    # layers 0 and 1 have the same shapes, so their blocks share keys and are timed once
    assert len(every) == 1 + 6 + 6 + 6 + 1 and len({block.key for block in every}) == 1 + 6 + 6 + 1
    genotype = MobileGenotype(("k3_e3", "skip", "k5_e6"))
    chosen = SPACE.latency_blocks(SMALL, SHAPE, genotype)
    assert [block.key.split("/")[1] for block in chosen] == ["stem", "layer", "layer", "head"]
    assert {block.key for block in chosen} <= {block.key for block in every}
    assert chosen[2].key.endswith("/s2/hw8") and chosen[3].key.endswith("/hw4")  # the stride-2 layer halves


def test_table_measures_once_predicts_a_sum_and_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    table = LatencyTable(path, threads=1, runs=3)
    blocks = SPACE.latency_blocks(SMALL, SHAPE, None)
    assert table.measure(blocks) == len({block.key for block in blocks}) + 1  # each distinct block, one call
    assert all(value >= 0 for value in table.entries.values()) and table.entries[OVERHEAD_KEY] > 0
    genotype = MobileGenotype(("k3_e3", "skip", "k5_e6"))
    chosen = SPACE.latency_blocks(SMALL, SHAPE, genotype)
    expected = table.entries[OVERHEAD_KEY] + sum(table.entries[block.key] for block in chosen)
    assert table.predict(chosen) == pytest.approx(expected)
    again = LatencyTable(path, threads=1, runs=3)
    assert again.measure(blocks) == 0 and again.predict(chosen) == pytest.approx(expected)
    stored = json.loads(path.read_text())
    assert stored["threads"] == 1 and stored["machine"] == table.machine and "onnxruntime" in stored


def test_a_table_of_another_machine_or_thread_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"machine": "another CPU", "threads": 1, "entries": {}}))
    with pytest.raises(DhaError, match="another machine"):
        LatencyTable(path, threads=1, runs=3)
    path.write_text("{not json")
    with pytest.raises(DhaError, match="not a table written by dha"):
        LatencyTable(path, threads=1, runs=3)


def test_prediction_needs_every_block(tmp_path: Path) -> None:
    table = LatencyTable(tmp_path / "table.json", threads=1, runs=3)
    with pytest.raises(DhaError, match="dha profile-latency"):
        table.predict(SPACE.latency_blocks(SMALL, SHAPE, MobileGenotype(("k3_e3", "skip", "k5_e6"))))


def test_the_cell_space_has_no_latency_table() -> None:
    with pytest.raises(DhaError, match="mobilenet"):
        DARTS.latency_blocks(DartsSettings(), SHAPE, None)


def test_every_budget_is_tested() -> None:
    settings = SearchConfig(max_params=100, max_macs=1000, max_latency_ms=2.0)
    assert within_budget(ChildCost(100, 1000, 2.0), settings)
    assert not within_budget(ChildCost(101, 1000, 2.0), settings)
    assert not within_budget(ChildCost(100, 1001, 2.0), settings)
    assert not within_budget(ChildCost(100, 1000, 2.1), settings)
    assert not within_budget(ChildCost(100, 1000, None), settings)  # a latency budget needs a prediction
    assert within_budget(ChildCost(10**9, 10**12, None), SearchConfig())


def test_the_table_is_calibrated_on_whole_reference_networks_per_backbone(tmp_path: Path) -> None:
    table = LatencyTable(tmp_path / "table.json", threads=1, runs=3)
    complete_table(table, SPACE, SMALL, SHAPE)
    blocks = SPACE.latency_blocks(SMALL, SHAPE, MobileGenotype(("k3_e3", "skip", "k5_e6")))
    scale = table.scales[backbone_signature(blocks)]
    assert scale > 0 and table.predict(blocks) == pytest.approx(scale * table.summed(blocks))
    assert LatencyTable(tmp_path / "table.json", threads=1, runs=3).scales == table.scales  # saved with it
    other = DataShape(num_classes=4, channels=3, image_size=8)  # another head: another backbone, no factor yet
    assert backbone_signature(SPACE.latency_blocks(SMALL, other, None)) not in table.scales
    assert complete_table(table, SPACE, SMALL, SHAPE) == 0  # nothing left to measure
