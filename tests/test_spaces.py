"""DARTS operations, genotypes, networks and their cost counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dha_pipeline.errors import DhaError
from dha_pipeline.spaces.cost import count_macs, count_params
from dha_pipeline.spaces.base import resolve_stem
from dha_pipeline.spaces.darts.network import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.darts.genotype import DARTS_V2, KNOWN_GENOTYPES, Genotype, known_genotype
from dha_pipeline.spaces.darts.operations import OPS, PRIMITIVES


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_channels_and_applies_stride(name: str, stride: int) -> None:
    op = OPS[name](6, stride, True)
    out = op(torch.randn(2, 6, 8, 8))
    assert out.shape == (2, 6, 8 // stride, 8 // stride)
    if not (name == "skip_connect" and stride == 1):
        assert isinstance(list(op.modules())[-1], nn.BatchNorm2d), f"{name} must end in BatchNorm"


def test_genotype_round_trip_and_validation() -> None:
    for genotype in KNOWN_GENOTYPES.values():
        assert Genotype.from_dict(genotype.to_dict()) == genotype
    raw = DARTS_V2.to_dict()
    raw["normal"][0] = ["conv_9x9", 0]
    with pytest.raises(DhaError, match="conv_9x9"):
        Genotype.from_dict(raw)
    raw = DARTS_V2.to_dict()
    raw["normal"][0] = ["sep_conv_3x3", 5]
    with pytest.raises(DhaError, match="does not exist"):
        Genotype.from_dict(raw)
    with pytest.raises(DhaError, match="unknown genotype"):
        known_genotype("NOPE")


@pytest.mark.parametrize("size, channels, stem", [(16, 1, "small"), (32, 3, "small"), (64, 3, "large")])
def test_network_shapes_and_aux(size: int, channels: int, stem: str) -> None:
    config = NetworkConfig(num_classes=7, in_channels=channels, image_size=size, init_channels=4, layers=3,
                           genotype=DARTS_V2, stem=stem, auxiliary=True, drop_path=0.2)
    net = DartsNetwork(config)
    logits, aux = net.forward_train(torch.randn(3, channels, size, size))
    assert logits.shape == (3, 7) and aux is not None and aux.shape == (3, 7)
    net.eval()
    assert net(torch.randn(2, channels, size, size)).shape == (2, 7)
    assert net.forward_train(torch.randn(2, channels, size, size))[1] is None
    assert NetworkConfig.from_dict(config.to_dict()) == config


def test_stem_auto_picks_by_size() -> None:
    assert resolve_stem("auto", 32) == "small" and resolve_stem("auto", 224) == "large"
    assert resolve_stem("small", 224) == "small"


def test_cost_counts_match_hand_counts() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    assert count_params(net) == 3 * 8 * 9 + (8 * 9 + 8) + (8 * 5 + 5)
    assert count_macs(net, 3, 10) == 100 * 8 * 3 * 9 + 100 * 8 * 9 + 8 * 5
    assert net.training


def test_params_exclude_auxiliary_head() -> None:
    kwargs = dict(num_classes=10, in_channels=3, image_size=32, init_channels=4, layers=3, genotype=DARTS_V2)
    plain = DartsNetwork(NetworkConfig(**kwargs))
    with_aux = DartsNetwork(NetworkConfig(**kwargs, auxiliary=True))
    assert count_params(plain) == count_params(with_aux)


def test_registry_serves_the_cell_space_and_rejects_unknown_names() -> None:
    from dha_pipeline.spaces.registry import get_space, space_names

    assert "darts" in space_names() and get_space("darts").name == "darts"
    with pytest.raises(DhaError, match="unknown search space 'nope'") as info:
        get_space("nope")
    assert "darts" in str(info.value)
