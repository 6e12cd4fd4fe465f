"""Derive: the trained network as a plain standalone module with its weights.

In manual mode the trained network already is the child: derive strips the
training-only parts (auxiliary head, drop-path), checks that the child computes
exactly what the trained network computes, and saves it with what export needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import write_json
from dha_pipeline.search.checkpoint import load_checkpoint, save_checkpoint
from dha_pipeline.spaces.darts import DartsNetwork, NetworkConfig

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


def derive_child(checkpoint_path: Path, child_path: Path) -> tuple[Child, float]:
    """Build the child from a training checkpoint, check it, save it; returns it and the max logit gap."""
    state = load_checkpoint(checkpoint_path)
    trained_config = NetworkConfig.from_dict(state["network"])
    trained = DartsNetwork(trained_config)
    trained.load_state_dict(state["model"])
    child_config = dataclasses.replace(trained_config, auxiliary=False, drop_path=0.0)
    child_model = DartsNetwork(child_config)
    child_state = {k: v for k, v in state["model"].items() if not k.startswith("auxiliary_head.")}
    child_model.load_state_dict(child_state)
    gap = _max_logit_gap(trained, child_model, trained_config)
    if gap > EXACTNESS_TOLERANCE:
        raise DhaError(f"derived child differs from the trained network by {gap:.2e}", "report this as a bug")
    last = state["history"][-1] if state["history"] else {}
    info = {"genotype": child_config.genotype.to_dict(), "components": [], "mode": "manual",
            "search_space": "darts", "da_policy": None, "base_augment": state["augment"],
            "hyperparameters": {"lr": last.get("lr"), "weight_decay": last.get("weight_decay"),
                                "schedule": state["schedule"]},
            "epochs": state["epoch"], "final_val_top1": last.get("val_top1"),
            "recipe_sha256": state["recipe_sha256"], "data": state["data"]}
    save_checkpoint({"network": child_config.to_dict(), "state_dict": child_model.state_dict(),
                     "classes": state["classes"], "mean": state["mean"], "std": state["std"], "info": info},
                    child_path)
    write_json(child_path.parent / "genotype.json", child_config.genotype.to_dict())
    return Child(child_model.eval(), state["classes"], state["mean"], state["std"], info), gap


@torch.no_grad()
def _max_logit_gap(trained: DartsNetwork, child: DartsNetwork, config: NetworkConfig) -> float:
    """Max |logit difference| between two networks in eval mode on a fixed random batch."""
    inputs = torch.randn(4, config.in_channels, config.image_size, config.image_size,
                         generator=torch.Generator().manual_seed(0))
    return float((trained.eval()(inputs) - child.eval()(inputs)).abs().max())


def load_child(child_path: Path) -> Child:
    """Read a derived child written by `derive_child`."""
    state = load_checkpoint(child_path)
    if not {"network", "state_dict", "classes", "mean", "std", "info"} <= set(state):
        raise DhaError(f"'{child_path}' is not a derived child network",
                       "pass runs/<name>/derived/child.pt (written by `dha derive`)")
    model = DartsNetwork(NetworkConfig.from_dict(state["network"]))
    model.load_state_dict(state["state_dict"])
    return Child(model.eval(), state["classes"], state["mean"], state["std"], state["info"])
