"""Several processes under torchrun (gloo on CPU): the ranks hold one model, match a single process with
the same global batch, resume exactly, and stop together."""

from __future__ import annotations

import csv
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import write_recipe
from torch.utils.data.distributed import DistributedSampler

from cli.main import main
from dha_pipeline.data.cache import load_cache
from dha_pipeline.data.device import rank_indices
from dha_pipeline.errors import DhaError
from dha_pipeline.launch import Launch, forwarded
from dha_pipeline.layout import RunLayout
from dha_pipeline.search import loop
from dha_pipeline.checkpoint import load_checkpoint
from dha_pipeline.search.replicas import SHARED_PARTS
from dha_pipeline.stages import resolve_recipe

ROOT = Path(__file__).resolve().parents[1]

DDP_RECIPE = """
name = "ddp"
seed = 0
device = "cpu"

[data]
dataset = "digits"
image_size = 8
channels = "1"

[model]
init_channels = 4
layers = 3

[train]
epochs = 2
batch_size = 64

[augment]
crop_padding = 1
hflip = false

[search]
mode = "joint"
components = ["nas", "da", "hpo"]
search_epochs = 1

[export]
parity_samples = 64
formats = ["onnx", "torchscript"]  # .pt2 (about 5 s an export) is tested in test_deploy.py

[evaluate]
latency_runs = 2
"""

# The same network trained with learned eta only, and nothing random in the data path: a 2-process run
# then differs from a 1-process run only in BatchNorm's batch statistics (see the comparison test).
HPO_ONLY = (DDP_RECIPE.replace('mode = "joint"', 'mode = "manual"')
            .replace('components = ["nas", "da", "hpo"]', 'components = ["hpo"]')
            .replace("crop_padding = 1", "crop_padding = 0")
            + "\n[hpo]\nanchor = 0.0\n")  # eta free, as the tolerances below were measured



def _dha(*args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            **popen)  # type: ignore[call-overload]


def _recipe_in(directory: Path, text: str) -> Path:
    directory.mkdir()
    return write_recipe(directory, text)


def _history(recipe: Path) -> list[dict[str, float]]:
    with resolve_recipe(recipe).layout.history.open() as handle:
        return [{key: float(value) for key, value in row.items() if key != "phase"} for row in csv.DictReader(handle)]


def test_rank_indices_shard_like_a_distributed_sampler() -> None:
    order = torch.randperm(100, generator=torch.Generator().manual_seed(0))
    global_batch, world, steps = 8, 2, 100 // 8
    for process in range(world):
        mine = torch.cat([rank_indices(order, step, global_batch, process, world) for step in range(steps)])
        sampler = DistributedSampler(order.tolist(), num_replicas=world, rank=process, shuffle=False, drop_last=True)
        expected = order[torch.tensor(list(sampler))][:len(mine)]
        assert torch.equal(mine, expected)
    for step in range(steps):
        together = torch.cat([rank_indices(order, step, global_batch, r, world) for r in range(world)])
        assert sorted(together.tolist()) == sorted(order[step * global_batch:(step + 1) * global_batch].tolist())


def test_launch_builds_torchrun_flags() -> None:
    assert Launch(4).torchrun_args(["run", "r.toml"]) == [
        "--nproc-per-node", "4", "--nnodes", "1", "--standalone", "--module", "cli", "run", "r.toml"]
    several = Launch(8, "2", rdzv_endpoint="node0:29500", rdzv_id="job7").torchrun_args(["run", "r.toml"])
    assert several[:4] == ["--nproc-per-node", "8", "--nnodes", "2"]
    assert "--rdzv-endpoint" in several and several[several.index("--rdzv-endpoint") + 1] == "node0:29500"
    assert several[several.index("--rdzv-id") + 1] == "job7"
    assert Launch(2, "2", node_rank=1).torchrun_args(["run"])[4:6] == ["--node-rank", "1"]


def test_the_processes_get_the_users_own_command_line_minus_the_launch_flags() -> None:
    argv = ["run", "r.toml", "--nproc", "2", "--set", "train.epochs=3", "--nnodes=2", "--skip-bad",
            "--rdzv-endpoint", "node0:29500", "--resume", "--rdzv-id=job7", "--node-rank", "1", "--download"]
    assert forwarded(argv) == ["run", "r.toml", "--set", "train.epochs=3", "--skip-bad", "--resume", "--download"]
    assert forwarded(["run", "r.toml", "--set", "name=--nproc"]) == ["run", "r.toml", "--set", "name=--nproc"]


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = write_recipe(tmp_path, DDP_RECIPE)
    assert main(["prepare", str(path)]) == 0
    recipe = resolve_recipe(path)
    monkeypatch.setattr(loop, "world_size", lambda: 3)
    with pytest.raises(DhaError, match="does not split evenly over 3 processes"):
        loop.SearchRun(recipe, load_cache(recipe.layout.cache, ("train", "val")))


def test_two_processes_hold_one_model_and_run_every_stage(tmp_path: Path) -> None:
    """`dha run --nproc 2`: tau, eta, b, theta and the derived genotype are bit-identical on both ranks,
    the DA draws are not (rank-specific seeds), rank 0 alone prints and writes, every stage runs."""
    recipe = write_recipe(tmp_path, DDP_RECIPE)
    process = _dha("run", str(recipe), "--nproc", "2", "--set", 'export.formats=["onnx"]')
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    layout = resolve_recipe(recipe, ['export.formats=["onnx"]']).layout
    assert not (layout.exports.root / "model.ts").exists(), "the user's --set reached the processes"
    replicas = json.loads(layout.summary.read_text())["replicas"]
    assert replicas["processes"] == 2 and replicas["shared_parts_agree"]
    for part in SHARED_PARTS:
        digests = replicas["parts"][part]
        assert len(digests) == 2 and digests[0] == digests[1], part
    own = replicas["parts"]["own_stream"]
    assert own[0] != own[1], "each rank draws its augmentation from its own stream"
    assert out.count("dha search") == 1, "only rank 0 prints the stage summaries"
    assert json.loads(layout.genotype.read_text()) == json.loads(layout.summary.read_text())["genotype"]
    assert (layout.exports.root / "model.onnx").is_file() and (layout.exports.root / "evaluation.json").is_file()
    assert len(load_checkpoint(layout.checkpoint)["rng"]) == 2, "each rank's random streams are kept"
    assert main(["search", str(recipe), "--resume"]) == 2, "a 2-process checkpoint needs 2 processes to resume"


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m cli search` against `dha search`, both with a global batch of 64.

    Gradients are averaged over the ranks, so the two runs take the same steps on the same samples except
    that BatchNorm normalizes each rank's 32 samples instead of all 64. Measured on this recipe: the epoch
    train losses differ by under 1%, the learned base lr by 1.5%, val top-1 by 2 points (3 of 144 images).
    The tolerances are 3-4x that, to hold across BLAS builds while still failing on a reduction that sums
    instead of averaging or a learner that drifts apart.
    """
    one, two = _recipe_in(tmp_path / "one", HPO_ONLY), _recipe_in(tmp_path / "two", HPO_ONLY)
    for recipe in (one, two):
        assert main(["prepare", str(recipe)]) == 0
    assert main(["search", str(one)]) == 0
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                "2", "-m", "cli", "search", str(two)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-2000:]
    single, double = _history(one), _history(two)
    assert len(single) == len(double) == 2
    for a, b in zip(single, double, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)
        assert b["lr"] == pytest.approx(a["lr"], rel=0.05)
        assert b["weight_decay"] == pytest.approx(a["weight_decay"], rel=0.005)
    assert abs(double[-1]["val_top1"] - single[-1]["val_top1"]) <= 0.08
    summaries = [json.loads(resolve_recipe(recipe).layout.summary.read_text()) for recipe in (one, two)]
    assert "replicas" not in summaries[0] and summaries[1]["replicas"]["processes"] == 2, "two ranks trained"


def test_stopped_then_resumed_on_two_processes_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGTERM to `dha run --nproc 2` (what a job scheduler sends) mid-epoch, then `--resume`: the final
    weights equal those of an uninterrupted 2-process run, bit for bit."""
    text = (DDP_RECIPE.replace("epochs = 2", "epochs = 2\ncheckpoint_every_steps = 3")
            .replace('formats = ["onnx", "torchscript"]', 'formats = ["torchscript"]'))  # ONNX: the test above
    reference, cut = _recipe_in(tmp_path / "reference", text), _recipe_in(tmp_path / "cut", text)
    assert main(["prepare", str(reference)]) == 0  # the reference needs only the search's weights
    finished = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               "-m", "cli", "search", str(reference)], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    checkpoint = resolve_recipe(cut).layout.checkpoint
    stopped = _dha("run", str(cut), "--nproc", "2")
    deadline = time.time() + 300
    while time.time() < deadline and stopped.poll() is None:
        try:
            state = load_checkpoint(checkpoint)
        except DhaError:  # not written yet
            time.sleep(0.05)
            continue
        if state["epoch"] >= 1 and state["step_in_epoch"] > 0:
            break
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by signal 15" in err and "--resume" in err
    assert load_checkpoint(checkpoint)["epoch"] < 2, "the run must have been stopped before it finished"
    resumed = _dha("run", str(cut), "--nproc", "2", "--resume")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-2000:]
    assert "resumed from: epoch 2, step" in out
    expected = load_checkpoint(resolve_recipe(reference).layout.checkpoint)["network"]
    actual = load_checkpoint(checkpoint)["network"]
    assert all(torch.equal(expected[key], actual[key]) for key in expected)


def _nan_on_rank_one(process: int, init_file: str, recipe_path: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=process, world_size=2)
    try:
        recipe = resolve_recipe(recipe_path)
        run = loop.SearchRun(recipe, load_cache(recipe.layout.cache, ("train", "val")))
        if process == 1:  # a bad batch on one rank only
            real = loop.F.cross_entropy
            loop.F.cross_entropy = lambda logits, *a, **k: real(logits, *a, **k) * float("nan")
        try:
            run.run()
            outcome = "finished"
        except DhaError as error:
            outcome = str(error)
        Path(f"{results}.{process}").write_text(outcome)
        # leave together: a rank tearing gloo down while the other still talks to it can abort the other
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    finally:
        dist.destroy_process_group()


def test_a_nan_on_one_rank_stops_every_rank_with_the_same_error(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, HPO_ONLY)
    assert main(["prepare", str(recipe)]) == 0
    results = str(tmp_path / "outcome")
    mp.spawn(_nan_on_rank_one, args=(str(tmp_path / "init"), str(recipe), results), nprocs=2, join=True)
    outcomes = [Path(f"{results}.{process}").read_text() for process in (0, 1)]
    assert outcomes[0] == outcomes[1]
    assert "loss became non-finite at epoch 1, step 1" in outcomes[0]
    assert not RunLayout.of(tmp_path / "runs", tmp_path / "exports", "ddp").checkpoint.exists()
