"""Deriving the child from the supernet: same logits, plain module, weights folded."""

from __future__ import annotations

import pytest
import torch

from conftest import unsettle_batchnorms
from dha_pipeline.spaces.base import ArchWeights
from dha_pipeline.spaces.darts.space import SPACE
from dha_pipeline.spaces.darts.fold import child_from_supernet
from dha_pipeline.spaces.darts.network import DartsNetwork, NetworkConfig
from dha_pipeline.spaces.darts.supernet import CELL_TYPES, Supernet, SupernetConfig


def _arch(seed: int) -> ArchWeights:
    generator = torch.Generator().manual_seed(seed)
    arch = {}
    for cell_type in CELL_TYPES:
        for node in range(4):
            sources = torch.randperm(2 + node, generator=generator)[:2].sort().values.tolist()
            arch[(cell_type, node)] = [(s, int(torch.randint(0, 7, (1,), generator=generator)),
                                        torch.rand(1, generator=generator).squeeze() * 2 - 0.5) for s in sources]
    # make sure the stride-1 skip (no BatchNorm) and dil_conv_5x5 both occur
    arch[("normal", 1)][0] = (0, 2, torch.tensor(0.7))
    arch[("normal", 2)][1] = (3, 6, torch.tensor(1.3))
    return arch


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_child_computes_what_the_supernet_computes(seed: int) -> None:
    torch.manual_seed(seed)
    supernet = Supernet(SupernetConfig(num_classes=5, in_channels=3, image_size=16, init_channels=4, layers=4))
    arch = _arch(seed)
    unsettle_batchnorms(supernet, lambda x: supernet(x, arch))
    child = child_from_supernet(supernet, arch)
    assert isinstance(child, DartsNetwork)
    inputs = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        gap = (supernet(inputs, arch) - child(inputs)).abs().max().item()
    assert gap <= 1e-5
    rebuilt = DartsNetwork(NetworkConfig.from_dict(child.config.to_dict()))
    rebuilt.load_state_dict(child.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(inputs), child(inputs))
    assert child.config.identity_scales is not None
    assert child.config.identity_scales[0][2] == pytest.approx(0.7)


def test_genotype_lists_the_active_edges() -> None:
    arch = _arch(0)
    genotype = SPACE.genotype({key: [(source, op) for source, op, _ in active] for key, active in arch.items()})
    assert genotype.normal[2] == ("skip_connect", 0)
    assert genotype.normal[5] == ("dil_conv_5x5", 3)
    assert len(genotype.reduce) == 8


def test_batchnorm_affine_is_fixed_until_the_node_freezes() -> None:
    supernet = Supernet(SupernetConfig(num_classes=3, in_channels=1, image_size=8, init_channels=4, layers=3))
    op_norms = [m for cell in supernet.cells for edge in cell.edges for op in edge for m in op.modules()
                if isinstance(m, torch.nn.BatchNorm2d)]
    assert op_norms and not any(m.weight.requires_grad or m.bias.requires_grad for m in op_norms)
    supernet.enable_affine(("normal", 1), [(0, 3), (2, 5)])
    for cell in supernet.cells:
        for node, source, op_index in ((1, 0, 3), (1, 2, 5), (1, 1, 3), (0, 0, 3)):
            norms = [m for m in cell.op(node, source, op_index).modules() if isinstance(m, torch.nn.BatchNorm2d)]
            expected = not cell.reduction and (source, op_index) in ((0, 3), (2, 5)) and node == 1
            assert all(m.weight.requires_grad == expected and m.bias.requires_grad == expected for m in norms)


def test_space_child_of_a_supernet_folds_and_of_a_network_drops_training_parts() -> None:
    torch.manual_seed(0)
    supernet = Supernet(SupernetConfig(num_classes=4, in_channels=1, image_size=8, init_channels=4, layers=3))
    arch = _arch(1)
    inputs = torch.randn(3, 1, 8, 8)
    supernet.eval()
    with torch.no_grad():
        folded = SPACE.child(supernet, arch)
        assert (folded(inputs) - supernet(inputs, arch)).abs().max() <= 1e-5
    network = DartsNetwork(NetworkConfig(4, 1, 8, 4, 3, folded.config.genotype, auxiliary=True, drop_path=0.2))
    network.eval()
    child = SPACE.child(network, None)
    assert child.auxiliary_head is None and child.config.drop_path == 0.0
    with torch.no_grad():
        assert torch.equal(child(inputs), network(inputs))
    with pytest.raises(ValueError, match="architecture weights"):
        SPACE.child(supernet, None)
