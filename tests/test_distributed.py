"""The gradient-reduction seam: a no-op for one process, the mean over ranks under torch.distributed."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dha_pipeline.distributed import all_average, is_main_process, rank, world_size


def test_one_process_changes_nothing() -> None:
    grads = [torch.tensor([1.0, 2.0]), None, torch.tensor(3.0)]
    all_average(grads)
    assert torch.equal(grads[0], torch.tensor([1.0, 2.0])) and grads[1] is None
    assert (rank(), world_size(), is_main_process()) == (0, 1, True)


def _average_on_rank(local_rank: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=local_rank, world_size=2)
    try:
        grads = [torch.full((3,), float(local_rank + 1)), None, torch.tensor([10.0 * (local_rank + 1)])]
        all_average(grads)
        torch.save({"grads": grads, "rank": rank(), "main": is_main_process(), "world": world_size()},
                   f"{results}.{local_rank}")
    finally:
        dist.destroy_process_group()


def test_two_processes_hold_the_mean_of_their_gradients(tmp_path: Path) -> None:
    results = str(tmp_path / "rank")
    mp.spawn(_average_on_rank, args=(str(tmp_path / "init"), results), nprocs=2, join=True)
    for local_rank in (0, 1):
        state = torch.load(f"{results}.{local_rank}", weights_only=True)
        assert torch.equal(state["grads"][0], torch.full((3,), 1.5)) and state["grads"][1] is None
        assert torch.equal(state["grads"][2], torch.tensor([15.0]))
        assert (state["rank"], state["main"], state["world"]) == (local_rank, local_rank == 0, 2)
