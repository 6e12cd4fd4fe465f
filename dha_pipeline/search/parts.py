"""The learnable parts of one search run and their optimizers, built from the recipe.

One training loop serves every variant; which parts exist is what distinguishes
them: the architecture code (nas), the augmentation policy (da), the
hyper-parameters (hpo). The network is a supernet while the architecture is
searched, and a plain genotype network otherwise (manual mode, or the second
phase of sequential mode).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dha_pipeline.augment.policy import AugmentPolicy
from dha_pipeline.data.cache import PreparedData
from dha_pipeline.recipe import Recipe
from dha_pipeline.search.hpo import HyperOptimizer, HyperParams, HyperSGD
from dha_pipeline.search.ista import ArchCode
from dha_pipeline.spaces.darts import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.genotype import Genotype, known_genotype
from dha_pipeline.spaces.supernet import CELL_TYPES, CellArch, Supernet, SupernetConfig


@dataclass
class SearchParts:
    """Everything that learns during a run, and how."""

    model: nn.Module
    optimizer: HyperSGD
    arch: ArchCode | None = None
    arch_optimizer: torch.optim.Optimizer | None = None
    policy: AugmentPolicy | None = None
    policy_optimizer: torch.optim.Optimizer | None = None
    hyper: HyperOptimizer | None = None

    @property
    def is_supernet(self) -> bool:
        """True while the architecture is searched (or fixed inside the supernet)."""
        return isinstance(self.model, Supernet)

    def arch_weights(self) -> dict[str, CellArch] | None:
        """Per cell type, per node, the active (input, op, weight) triples; None for a plain network."""
        if self.arch is None:
            return None
        return {cell_type: [edges for _, edges in self.arch.weights(cell_type)] for cell_type in CELL_TYPES}

    def forward_train(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and auxiliary logits of the current network."""
        if isinstance(self.model, Supernet):
            return self.model.forward_train(inputs, self.arch_weights())
        return self.model.forward_train(inputs)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits only (evaluation)."""
        return self.forward_train(inputs)[0]

    def state_dict(self) -> dict[str, Any]:
        """Checkpoint form of every part."""
        def state(part: Any) -> Any:
            return None if part is None else part.state_dict()

        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "arch": state(self.arch), "arch_optimizer": state(self.arch_optimizer),
                "policy": state(self.policy), "policy_optimizer": state(self.policy_optimizer),
                "hyper": state(self.hyper)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict` (the parts must have been built the same way)."""
        if self.arch is not None:
            self.arch.load_state_dict(state["arch"])
            self.enable_frozen_affine()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for name in ("arch_optimizer", "policy", "policy_optimizer", "hyper"):
            part = getattr(self, name)
            if part is not None:
                part.load_state_dict(state[name])

    def enable_frozen_affine(self) -> None:
        """Let the BatchNorm affine parameters of every frozen node's ops train."""
        if self.arch is None or not isinstance(self.model, Supernet):
            return
        for (cell_type, node_index), node in self.arch.nodes():
            if node.is_frozen:
                self.model.enable_affine(cell_type, node_index, node.support)


def supernet_config(recipe: Recipe, data: PreparedData) -> SupernetConfig:
    """The supernet the recipe asks for, shaped for the data."""
    model = recipe.model
    return SupernetConfig(num_classes=len(data.classes), in_channels=data.channels, image_size=data.image_size,
                          init_channels=model.init_channels, layers=model.layers, stem=model.stem,
                          auxiliary=model.auxiliary, drop_path=model.drop_path)


def network_config(recipe: Recipe, data: PreparedData, genotype: Genotype | None = None) -> NetworkConfig:
    """The plain network of `genotype` (default: the recipe's known genotype), shaped for the data."""
    model = recipe.model
    return NetworkConfig(num_classes=len(data.classes), in_channels=data.channels, image_size=data.image_size,
                         init_channels=model.init_channels, layers=model.layers,
                         genotype=genotype or known_genotype(model.genotype), stem=model.stem,
                         auxiliary=model.auxiliary, drop_path=model.drop_path)


def build_parts(recipe: Recipe, data: PreparedData, device: torch.device, components: set[str],
                genotype: Genotype | None = None) -> SearchParts:
    """Fresh parts for `components`; a supernet when 'nas' is among them, else the plain network."""
    if "nas" in components:
        model: nn.Module = Supernet(supernet_config(recipe, data)).to(device)
        arch: ArchCode | None = ArchCode(seed=recipe.seed).to(device)
    else:
        model = DartsNetwork(network_config(recipe, data, genotype)).to(device)
        arch = None
    train = recipe.train
    optimizer = HyperSGD(model.parameters(), lr=train.lr, momentum=train.momentum,
                         weight_decay=train.weight_decay, grad_clip=train.grad_clip)
    parts = SearchParts(model=model, optimizer=optimizer, arch=arch)
    if arch is not None:
        parts.arch_optimizer = torch.optim.Adam(arch.parameters(), lr=recipe.search.arch_lr)
    if "da" in components:
        augment = recipe.augment
        parts.policy = AugmentPolicy(temperature=augment.temperature, max_magnitude=augment.magnitude_max,
                                     entropy_floor_fraction=augment.entropy_floor).to(device)
        parts.policy_optimizer = torch.optim.Adam(parts.policy.parameters(), lr=augment.policy_lr)
    if "hpo" in components:
        hpo = recipe.hpo
        params = HyperParams.from_values(train.lr, train.weight_decay, (hpo.lr_low, hpo.lr_high),
                                         (hpo.wd_low, hpo.wd_high))
        parts.hyper = HyperOptimizer(params, hpo.hyper_lr, hpo.estimator)
    return parts

