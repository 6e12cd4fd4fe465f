"""Derive: the trained network as a plain standalone module with its weights.

A searched supernet becomes the plain genotype network with every active op's
weight folded into its BatchNorm; a plain network (manual mode, sequential
phase 2) only loses its training-only parts (auxiliary head, drop-path). Either
way the child must compute what the trained network computes (checked), and is
saved with what export needs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.search.checkpoint import load_checkpoint, save_checkpoint
from dha_pipeline.search.ista import ArchCode
from dha_pipeline.spaces.darts import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.fold import child_from_supernet
from dha_pipeline.spaces.supernet import CELL_TYPES, Supernet, SupernetConfig

CHILD = Path("derived") / "child.pt"
EXACTNESS_TOLERANCE = 1e-5


@dataclass
class Child:
    """A derived network and everything export and evaluate need to know about it."""

    model: DartsNetwork
    classes: list[str]
    mean: list[float]
    std: list[float]
    info: dict[str, Any]

    @property
    def config(self) -> NetworkConfig:
        """The network's build configuration."""
        return self.model.config


def _trained_and_child(state: dict[str, Any]) -> tuple[Callable[[torch.Tensor], torch.Tensor], DartsNetwork]:
    """The trained network (as a function of the input, eval mode) and its plain child."""
    model_state = state["parts"]["model"]
    if state["kind"] == "supernet":
        supernet = Supernet(SupernetConfig(**state["network"]))
        arch = ArchCode(seed=0)
        arch.load_state_dict(state["parts"]["arch"])
        supernet.load_state_dict(model_state)
        supernet.eval()
        weights = {cell_type: [edges for _, edges in arch.weights(cell_type)] for cell_type in CELL_TYPES}
        return (lambda inputs: supernet(inputs, weights)), child_from_supernet(supernet, weights)
    trained_config = NetworkConfig.from_dict(state["network"])
    trained = DartsNetwork(trained_config)
    trained.load_state_dict(model_state)
    child = DartsNetwork(dataclasses.replace(trained_config, auxiliary=False, drop_path=0.0))
    child.load_state_dict({k: v for k, v in model_state.items() if not k.startswith("auxiliary_head.")})
    return trained.eval(), child.eval()


def derive_child(checkpoint_path: Path, child_path: Path) -> tuple[Child, float]:
    """Build the child from a search checkpoint, check it, save it; returns it and the max logit gap."""
    state = load_checkpoint(checkpoint_path)
    if not {"kind", "network", "parts"} <= set(state):
        raise DhaError(f"'{checkpoint_path}' is not a search checkpoint", "rerun `dha search --force`")
    trained, child_model = _trained_and_child(state)
    gap = _max_logit_gap(trained, child_model)
    if gap > EXACTNESS_TOLERANCE:
        raise DhaError(f"derived child differs from the trained network by {gap:.2e}", "report this as a bug")
    child_config = child_model.config
    info = {"genotype": child_config.genotype.to_dict(), "components": state["components"], "mode": state["mode"],
            "search_space": "darts", "da_policy": state["da_policy"], "base_augment": state["augment"],
            "hyperparameters": {**state["hyperparameters"], "schedule": state["schedule"]},
            "epochs": state["epoch"], "final_val_top1": state["history"][-1]["val_top1"] if state["history"] else None,
            "recipe_sha256": state["recipe_sha256"], "data": state["data"]}
    save_checkpoint({"network": child_config.to_dict(), "state_dict": child_model.state_dict(),
                     "classes": state["classes"], "mean": state["mean"], "std": state["std"], "info": info},
                    child_path)
    write_json(child_path.parent / "genotype.json", child_config.genotype.to_dict())
    return Child(child_model, state["classes"], state["mean"], state["std"], info), gap


@torch.no_grad()
def _max_logit_gap(trained: Callable[[torch.Tensor], torch.Tensor], child: DartsNetwork) -> float:
    """Max |logit difference| between the trained network and the child (eval mode) on a fixed random batch."""
    config = child.config
    inputs = torch.randn(4, config.in_channels, config.image_size, config.image_size,
                         generator=torch.Generator().manual_seed(0))
    return float((trained(inputs) - child.eval()(inputs)).abs().max())


def load_child(child_path: Path) -> Child:
    """Read a derived child written by `derive_child`."""
    state = load_checkpoint(child_path)
    if not {"network", "state_dict", "classes", "mean", "std", "info"} <= set(state):
        raise DhaError(f"'{child_path}' is not a derived child network",
                       "pass runs/<name>/derived/child.pt (written by `dha derive`)")
    model = DartsNetwork(NetworkConfig.from_dict(state["network"]))
    model.load_state_dict(state["state_dict"])
    return Child(model.eval(), state["classes"], state["mean"], state["std"], state["info"])
