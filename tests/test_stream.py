"""Data that streams from files (data.storage = "files"): the index prepare writes, the batches the loop
reads (order, crops, shards, resume), unreadable files met mid-training, and a whole run to evaluate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from cli.main import main
from conftest import make_imagefolder
from dha_pipeline.data.cache import FILES, MEMORY, build_dataset, load_cache, read_manifest, save_cache
from dha_pipeline.data.stream import FileIndex, TrainStream, worker_batches, worker_context
from dha_pipeline.errors import DhaError
from dha_pipeline.formats.registry import get_format
from dha_pipeline.formats.onnx_runtime import read_onnx_metadata
from dha_pipeline.layout import RunLayout
from dha_pipeline.recipe import recipe_from_dict, recipe_to_toml
from dha_pipeline import stages
from dha_pipeline.search import loop
from dha_pipeline.search.run import run_search
from dha_pipeline.checkpoint import load_checkpoint

CLASSES = ("ant", "bee", "cow")
PER_CLASS = 24  # 72 train files -> 64 train + 8 val after the val split


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("stream") / "images", classes=CLASSES, per_class=PER_CLASS,
                            size=(20, 14))


def _raw(tmp_path: Path, folder: Path, **data: object) -> dict:
    return {"name": "stream", "runs_dir": str(tmp_path / "runs"), "exports_dir": str(tmp_path / "exports"),
            "device": "cpu", "seed": 3,
            "data": {"dataset": f"imagefolder:{folder}", "image_size": 12, "channels": "3", "storage": "files",
                     "workers": 1, "val_fraction": 0.111, **data},
            "model": {"init_channels": 4, "layers": 3},
            "train": {"epochs": 2, "batch_size": 16},
            "augment": {"resized_crop_min": 0.3},
            "search": {"mode": "joint", "components": ["nas", "da", "hpo"], "search_epochs": 1}}


def test_files_storage_prepares_an_index_and_no_pixels(tmp_path: Path, folder: Path) -> None:
    data = build_dataset(recipe_from_dict(_raw(tmp_path, folder)).data)
    assert data.storage == FILES
    assert {split: len(source.index) for split, source in data.sources.items()} == {"train": 64, "val": 8,
                                                                            "test": 3 * PER_CLASS}
    train = data.sources["train"].index
    assert train.sizes.shape == (64, 2) and (train.sizes > 0).all()  # width, height from the file headers
    assert all(train.path(i).is_file() for i in range(len(train)))
    assert len(data.mean) == len(data.std) == 3
    directory = save_cache(data, tmp_path / "cache").parent
    assert not list(directory.glob("x_*.npy")), "a streamed cache holds no pixels"
    manifest = read_manifest(directory)
    assert manifest["storage"] == FILES and manifest["root"] == str(folder)
    back = load_cache(directory)
    assert back.storage == FILES
    for split, source in data.sources.items():
        assert np.array_equal(back.sources[split].index.files, source.index.files)
        assert np.array_equal(back.sources[split].index.labels, source.index.labels)


def test_auto_storage_streams_only_what_would_not_fit(tmp_path: Path, folder: Path) -> None:
    small = _raw(tmp_path, folder, storage="auto")
    assert build_dataset(recipe_from_dict(small).data).storage == MEMORY
    # 144 images at 600 px are ~150 MB of uint8 pixels: over a 100 MB limit, so they stream
    large = _raw(tmp_path, folder, storage="auto", image_size=600, memory_limit_mb=100, stats_images=10)
    assert build_dataset(recipe_from_dict(large).data).storage == FILES


def test_files_storage_refuses_data_that_is_not_files(tmp_path: Path, folder: Path) -> None:
    raw = _raw(tmp_path, folder)
    raw["data"]["dataset"] = "digits"
    with pytest.raises(DhaError, match="not a folder of them"):
        build_dataset(recipe_from_dict(raw).data)


def _stream(data, process: int = 0, processes: int = 1, local_batch: int = 8) -> TrainStream:  # type: ignore[no-untyped-def]
    steps = len(data.sources["train"].index) // (local_batch * processes)
    return TrainStream(data.sources["train"].index, 12, 3, (0.3, 1.0), True, 3, local_batch, steps, 1,
                       torch.device("cpu"), process, processes, False)


def test_stream_batches_are_a_pure_function_of_epoch_and_step(tmp_path: Path, folder: Path) -> None:
    """What makes a mid-epoch resume exact: epoch e from step s reads the same pixels the whole epoch read
    from step s on; another epoch reads another order and other crops."""
    data = build_dataset(recipe_from_dict(_raw(tmp_path, folder)).data)
    stream = _stream(data)
    whole = list(stream.epoch(0, 0))
    assert len(whole) == 8 and whole[0][0].shape == (8, 3, 12, 12) and whole[0][0].dtype == torch.uint8
    resumed = list(stream.epoch(0, 5))
    assert len(resumed) == 3
    for (x, y), (rx, ry) in zip(whole[5:], resumed, strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)
    other = list(stream.epoch(1, 0))
    assert not torch.equal(torch.cat([x for x, _ in whole]), torch.cat([x for x, _ in other]))


def test_two_ranks_read_disjoint_shards_in_distributed_sampler_order(tmp_path: Path, folder: Path) -> None:
    data = build_dataset(recipe_from_dict(_raw(tmp_path, folder)).data)
    labels = torch.as_tensor(data.sources["train"].index.labels)
    for process in range(2):
        read = torch.cat([y for _, y in _stream(data, process, 2, 8).epoch(2, 0)])
        sampler = DistributedSampler(range(64), num_replicas=2, rank=process, shuffle=True, seed=3, drop_last=True)
        sampler.set_epoch(2)
        assert torch.equal(read, labels[list(sampler)])


def _layout(tmp_path: Path) -> RunLayout:
    return RunLayout.of(tmp_path / "runs", tmp_path / "exports", "stream")


def test_streamed_search_resumed_mid_epoch_ends_like_the_uninterrupted_run(tmp_path: Path, folder: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _raw(tmp_path / "ref", folder)
    raw["train"]["checkpoint_every_steps"] = 2
    data = build_dataset(recipe_from_dict(raw).data)
    reference = run_search(recipe_from_dict(raw), data)
    cut = {**raw, "runs_dir": str(tmp_path / "cut" / "runs")}
    calls = {"n": 0}
    real_step = loop.SearchRun.train_step

    def killed_in_second_epoch(self, images, labels):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4 + 3:  # epoch 2, step 3: after the checkpoint at step 2
            raise KeyboardInterrupt
        return real_step(self, images, labels)

    monkeypatch.setattr(loop.SearchRun, "train_step", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_search(recipe_from_dict(cut), data)
    checkpoint = _layout(tmp_path / "cut").checkpoint
    assert (load_checkpoint(checkpoint)["epoch"], load_checkpoint(checkpoint)["step_in_epoch"]) == (1, 2)
    monkeypatch.setattr(loop.SearchRun, "train_step", real_step)
    resumed = run_search(recipe_from_dict(cut), data, resume=True)
    assert resumed.resumed_from == "epoch 2, step 2"
    expected, actual = load_checkpoint(reference.checkpoint)["network"], load_checkpoint(checkpoint)["network"]
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    assert reference.genotype == resumed.genotype


def _truncate(path: Path) -> None:
    """Keep the header up to the start of the scan (Pillow still reads the size, so prepare indexes the
    file) and drop the compressed pixels."""
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\xff\xda") + 30])


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "copy", classes=CLASSES, per_class=PER_CLASS, size=(20, 14))


def _damage_a_training_jpeg(index: FileIndex) -> Path:
    """Damage one JPEG of the train split after prepare indexed it: met mid-training, as on a real disk."""
    path = next(index.path(i) for i in range(len(index)) if index.path(i).suffix == ".jpg")
    _truncate(path)
    return path


def test_an_unreadable_file_met_while_training_stops_the_run_naming_it(tmp_path: Path, copy: Path) -> None:
    raw = _raw(tmp_path, copy, workers=2)
    raw["search"] = {"mode": "manual", "components": []}
    recipe = recipe_from_dict(raw)
    data = build_dataset(recipe.data)
    damaged = _damage_a_training_jpeg(data.sources["train"].index)
    with pytest.raises(DhaError, match=f"unreadable image '{damaged}' met while training"):
        run_search(recipe, data)


def test_a_whole_streamed_run_skips_a_bad_file_and_exports_its_eval_crop(tmp_path: Path, copy: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path, copy, skip_bad=True, eval_crop=0.875)
    raw["train"]["epochs"] = 1
    raw["export"] = {"formats": ["onnx"]}
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_to_toml(recipe_from_dict(raw)))
    assert main(["prepare", str(recipe)]) == 0
    layout = _layout(tmp_path)
    damaged = _damage_a_training_jpeg(load_cache(layout.cache).sources["train"].index)
    assert main(["run", str(recipe)]) == 0
    summary = json.loads(layout.summary.read_text())
    assert summary["bad_files"] == [str(damaged)]
    assert "unreadable training image(s) were skipped" in capsys.readouterr().err
    meta = read_onnx_metadata(tmp_path / "exports" / "stream" / "model.onnx")
    assert meta["input"]["crop"] == 0.875
    assert get_format("torch").read_metadata(layout.child)["input"] == meta["input"], "the child views images alike"
    evaluation = json.loads((tmp_path / "exports" / "stream" / "evaluation.json").read_text())
    assert evaluation["num_samples"] == 3 * PER_CLASS


class DiesInWorker(Dataset):
    """A dataset whose worker process dies on its first item, as one killed for memory does."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        os._exit(3)


def test_a_worker_that_dies_is_one_clear_error_not_a_hang() -> None:
    batches = DataLoader(DiesInWorker(), num_workers=1, multiprocessing_context=worker_context())
    with pytest.raises(DhaError, match="reading images failed: DataLoader worker .* exited unexpectedly"):
        list(worker_batches(batches))


def test_the_held_in_estimator_is_refused_on_streamed_data(tmp_path: Path, folder: Path) -> None:
    """held_in draws a random training batch every step, which a stream does not serve: refused with the fix
    before prepare reads anything when the recipe says storage = 'files', and at the start of training when
    'auto' chose to stream; both by the streaming source's own rule."""
    raw = _raw(tmp_path, folder)
    raw["hpo"] = {"estimator": "held_in"}
    with pytest.raises(DhaError, match="held_in.*use hpo.estimator = 'next_batch'"):
        stages.prepare(recipe_from_dict(raw))
    assert not recipe_from_dict(raw).layout.cache.exists(), "refused before anything was written"
    raw["data"].update(storage="auto", image_size=600, memory_limit_mb=100, stats_images=10)
    recipe = recipe_from_dict(raw)
    data = build_dataset(recipe.data)
    assert data.storage == FILES
    with pytest.raises(DhaError, match="held_in.*use hpo.estimator = 'next_batch'"):
        loop.SearchRun(recipe, data)
