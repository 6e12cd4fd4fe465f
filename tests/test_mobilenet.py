"""The MobileNet space: its layers and choices, the supernet, exact folding into the child, and the
known architectures."""

from __future__ import annotations

import pytest
import torch

from conftest import unsettle_batchnorms
from dha_pipeline.errors import DhaError
from dha_pipeline.spaces.mobilenet.settings import MobileNetSettings
from dha_pipeline.search.ista import ArchCode
from dha_pipeline.spaces.base import DataShape
from dha_pipeline.spaces.cost import count_params
from dha_pipeline.spaces.mobilenet.space import SPACE
from dha_pipeline.spaces.mobilenet.backbone import Backbone
from dha_pipeline.spaces.mobilenet.blocks import MBCONV_CHOICES, SKIP, make_divisible
from dha_pipeline.spaces.mobilenet.fold import child_from_supernet
from dha_pipeline.spaces.mobilenet.genotype import MobileGenotype
from dha_pipeline.spaces.mobilenet.network import MobileNetwork, MobileNetworkConfig
from dha_pipeline.spaces.mobilenet.supernet import GROUP, MobileSupernet
from dha_pipeline.spaces.registry import get_space

SMALL = MobileNetSettings(space="mobilenet", width_mult=0.25, stage_channels=[16, 24, 32],
                          stage_depths=[2, 2, 1], stage_strides=[1, 2, 1], head_channels=32, stem="small")
SHAPE = DataShape(num_classes=5, channels=3, image_size=16)


def test_layers_offer_a_skip_only_where_they_keep_their_shape() -> None:
    specs = Backbone.of(SMALL, 5, 3, 16).layers()
    assert [(s.in_channels, s.out_channels, s.stride) for s in specs] == [
        (8, 8, 1), (8, 8, 1), (8, 8, 2), (8, 8, 1), (8, 8, 1)]  # width 0.25 rounds every stage to 8 channels
    paper = Backbone.of(MobileNetSettings(space="mobilenet"), 1000, 3, 224)
    layers = paper.layers()
    assert len(layers) == 21 and paper.stem_stride == 2
    assert [len(spec.choices) for spec in layers[:4]] == [6, 7, 7, 7]  # the first layer of a stage changes shape
    assert layers[16].choices == MBCONV_CHOICES  # 96 -> 192 channels, stride 2
    assert layers[12].choices == MBCONV_CHOICES  # 80 -> 96 channels at stride 1: no residual, no skip
    assert make_divisible(0.35 * 24) == 8 and make_divisible(1.4 * 24) == 32


def test_decision_points_keep_one_choice_and_compress_it() -> None:
    points = SPACE.decision_points(SMALL)
    assert [point.key for point in points] == [(GROUP, i) for i in range(5)]
    assert all(point.num_inputs == 1 and point.keep == 1 and point.code_size < point.size for point in points)
    assert points[2].ops == MBCONV_CHOICES and points[3].ops[-1] == SKIP


def test_the_registry_and_known_architectures() -> None:
    assert get_space("mobilenet") is SPACE and SPACE.default_genotype == "MBV2"
    mbv2 = SPACE.known_genotype("MBV2", MobileNetSettings(space="mobilenet"))
    assert mbv2.layers == ("k3_e6",) * 21
    network = SPACE.network(MobileNetSettings(space="mobilenet"), DataShape(1000, 3, 224), mbv2)
    # MobileNetV2 has 3.5 M parameters; this backbone (ProxylessNAS' stage depths) is a little larger
    assert 3_000_000 < count_params(network) < 5_300_000
    with pytest.raises(DhaError, match="unknown MobileNet genotype"):
        SPACE.known_genotype("RESNET", SMALL)


def test_a_genotype_must_fit_its_layers() -> None:
    backbone = Backbone.of(SMALL, 5, 3, 16)
    with pytest.raises(DhaError, match="only residual layers skip"):
        MobileNetwork(MobileNetworkConfig(backbone, MobileGenotype(("k3_e3", "k3_e3", SKIP, "k3_e3", "k3_e3"))))
    with pytest.raises(DhaError, match="4 layer choices"):
        MobileNetwork(MobileNetworkConfig(backbone, MobileGenotype(("k3_e3",) * 4)))
    with pytest.raises(DhaError, match="not in the MobileNet space"):
        SPACE.genotype_from_dict({"layers": ["k9_e6"]})


def _weights(choices: list[int], values: list[float]) -> dict:
    return {(GROUP, i): [(0, op, torch.tensor(w))] for i, (op, w) in enumerate(zip(choices, values, strict=True))}


def test_only_the_active_choice_runs_and_gets_gradients() -> None:
    torch.manual_seed(0)
    supernet = MobileSupernet(Backbone.of(SMALL, 5, 3, 16))
    weights = _weights([0, 6, 5, 6, 1], [1.0, 0.8, 1.2, 1.0, 0.9])
    supernet.forward_train(torch.randn(4, 3, 16, 16), weights)[0].sum().backward()
    layer = supernet.layers[2]
    used = [any(p.grad is not None for p in candidate.parameters()) for candidate in layer.candidates]
    assert used == [False, False, False, False, False, True]
    # BatchNorm affine parameters are off until the layer freezes, then only the kept choice's train
    norm = layer.candidates[5].last_batchnorm()
    assert not norm.weight.requires_grad
    supernet.enable_affine((GROUP, 2), [(0, 5)])
    assert norm.weight.requires_grad and not layer.candidates[0].last_batchnorm().weight.requires_grad


@pytest.mark.parametrize("seed", [0, 1])
def test_child_computes_what_the_supernet_computes(seed: int) -> None:
    torch.manual_seed(seed)
    supernet = MobileSupernet(Backbone.of(SMALL, 5, 3, 16))
    generator = torch.Generator().manual_seed(seed)
    choices = [int(torch.randint(0, len(layer.choices), (1,), generator=generator)) for layer in supernet.layers]
    choices[1] = 6  # a skip, whose weight stays a constant factor
    weights = _weights(choices, [0.7, 1.3, 0.9, 1.1, 0.6])
    unsettle_batchnorms(supernet, lambda x: supernet(x, weights))
    child = SPACE.child(supernet, weights)
    assert isinstance(child, MobileNetwork) and child.config.genotype.layers[1] == SKIP
    assert child.config.skip_scales is not None and child.config.skip_scales[1] == pytest.approx(1.3)
    assert not any(isinstance(m, torch.nn.ModuleList) and len(m) > 1 for layer in child.layers for m in layer.modules())
    inputs = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        assert (supernet(inputs, weights) - child(inputs)).abs().max().item() <= 1e-5
        rebuilt = SPACE.network_from_config(child.config.to_dict())
        rebuilt.load_state_dict(child.state_dict())
        assert torch.equal(rebuilt.eval()(inputs), child(inputs))


def test_the_ista_code_drives_the_supernet_and_names_its_genotype() -> None:
    code = ArchCode(SPACE.decision_points(SMALL), seed=3)
    weights = code.weights()
    supernet = MobileSupernet(Backbone.of(SMALL, 5, 3, 16))
    supernet(torch.randn(2, 3, 16, 16), weights).sum().backward()
    assert all(node.b.grad is not None for _, node in code.nodes())  # a kept skip also reaches its code
    genotype = SPACE.genotype(code.supports())
    assert len(genotype.layers) == 5
    assert genotype == child_from_supernet(supernet.eval(), weights).config.genotype


def test_describe_and_plot(tmp_path) -> None:
    genotype = MobileGenotype(("k3_e6", "k5_e3", "k7_e6", SKIP, "k3_e3"))
    assert SPACE.describe(genotype)["skipped layers"] == "1"
    SPACE.plot(genotype.to_dict(), tmp_path / "layers.png")
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"


def test_recipe_stage_lists_are_checked() -> None:
    from dha_pipeline.recipe import recipe_from_dict

    with pytest.raises(DhaError, match="one length"):
        recipe_from_dict({"model": {"space": "mobilenet", "stage_depths": [1, 2]}})
    with pytest.raises(DhaError, match="1 or 2"):
        recipe_from_dict({"model": {"space": "mobilenet", "stage_strides": [1, 2, 3, 1, 2, 1]}})

