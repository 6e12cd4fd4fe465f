"""Derive: the trained network of a SearchResult as a plain standalone module with its weights.

The result's space turns the trained network into its child: a searched supernet becomes the plain
network of its genotype with every active op's weight folded in; a plain network (manual mode,
sequential train phase) only loses its training-only parts. Either way the child must compute what
the trained network computes in eval mode (checked), and is saved with what export needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dha_pipeline.checkpoint import save_checkpoint
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.formats.torch_eager import child_network, read_child
from dha_pipeline.search.result import SearchResult
from dha_pipeline.spaces.registry import get_space

EXACTNESS_TOLERANCE = 1e-5


@dataclass
class Child:
    """A derived network and everything export and evaluate need to know about it."""

    model: nn.Module
    space: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    channels: int
    image_size: int
    info: dict[str, Any]


def _trained(result: SearchResult) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The trained network of a result (eval mode) and its logits as a function of the input."""
    space = get_space(result.space)
    weights = result.weights()
    if result.kind == "supernet":
        supernet = space.supernet_from_config(result.network)
        supernet.load_state_dict(result.state_dict)
        supernet.eval()
        return supernet, lambda inputs: supernet(inputs, weights)
    network = space.network_from_config(result.network)
    network.load_state_dict(result.state_dict)
    network.eval()
    return network, network


def derive_child(result_path: Path, child_path: Path, genotype_path: Path) -> tuple[Child, float]:
    """Build the child from a search result, check it, save it; returns it and the max logit gap."""
    result = SearchResult.load(result_path)
    trained, trained_logits = _trained(result)
    child_model = get_space(result.space).child(trained, result.weights())
    gap = _max_logit_gap(trained_logits, child_model, result.channels, result.image_size)
    if gap > EXACTNESS_TOLERANCE:
        raise DhaError(f"derived child differs from the trained network by {gap:.2e}", "report this as a bug")
    info = {"name": result.name, "genotype": result.genotype, "components": result.components, "mode": result.mode,
            "search_space": result.space, "da_policy": result.da_policy, "base_augment": result.base_augment,
            "hyperparameters": result.hyperparameters, "epochs": result.epochs,
            "final_val_top1": result.final_val_top1, "recipe_sha256": result.recipe_sha256, "data": result.data}
    child = Child(child_model, result.space, result.classes, result.mean, result.std, result.channels,
                  result.image_size, info)
    save_checkpoint({"space": child.space, "network": child_model.config.to_dict(),
                     "state_dict": child_model.state_dict(), "classes": child.classes, "mean": child.mean,
                     "std": child.std, "channels": child.channels, "image_size": child.image_size, "info": info},
                    child_path)
    write_json(genotype_path, result.genotype)
    return child, gap


@torch.no_grad()
def _max_logit_gap(trained: Callable[[torch.Tensor], torch.Tensor], child: nn.Module, channels: int,
                   image_size: int) -> float:
    """Max |logit difference| between the trained network and the child (eval mode) on a fixed random batch."""
    inputs = torch.randn(4, channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    return float((trained(inputs) - child.eval()(inputs)).abs().max())


def load_child(child_path: Path) -> Child:
    """Read a derived child written by `derive_child` (the torch eager format's file)."""
    state = read_child(child_path)
    return Child(child_network(state), state["space"], state["classes"], state["mean"], state["std"],
                 int(state["channels"]), int(state["image_size"]), state["info"])
