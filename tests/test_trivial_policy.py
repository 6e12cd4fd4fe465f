"""The learned policy that starts at TrivialAugment Wide: at its start it draws as torchvision's
TrivialAugmentWide does, it leaves the start only against a KL pull, and a search step runs it before Cutout."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.autoaugment as autoaugment

from dha_pipeline.augment.base import BaseAugment
from dha_pipeline.augment.ops import OP_NAMES
from dha_pipeline.augment.policy import apply_ops
from dha_pipeline.augment.trivial import NUM_BINS, wide_magnitudes
from dha_pipeline.augment.trivial_policy import TrivialPolicy
from dha_pipeline.data.cache import build_dataset
from dha_pipeline.recipe import recipe_from_dict
from dha_pipeline.search import loop
from test_augment_trivial import TORCHVISION_NAMES, _strength

K = len(OP_NAMES)
SIDE = 8
DRAWS = 14_000


def torchvision_draws(n: int) -> list[tuple[str, float]]:
    """(op, signed magnitude in torchvision's units) of n TrivialAugmentWide calls, recorded at `_apply_op`."""
    seen: list[tuple[str, float]] = []

    def record(img, op_name, magnitude, interpolation, fill):  # type: ignore[no-untyped-def]
        seen.append((TORCHVISION_NAMES[op_name], magnitude))
        return img

    real = autoaugment._apply_op
    autoaugment._apply_op = record
    try:
        torch.manual_seed(0)
        augment, image = T.TrivialAugmentWide(), torch.zeros(3, SIDE, SIDE, dtype=torch.uint8)
        for _ in range(n):
            augment(image)
    finally:
        autoaugment._apply_op = real
    return seen


def torchvision_bins() -> dict[str, tuple[torch.Tensor, bool]]:
    """Each op's 31 magnitudes (torchvision's units) and whether it is signed, by our op name."""
    space = T.TrivialAugmentWide()._augmentation_space(NUM_BINS)
    return {TORCHVISION_NAMES[name]: (magnitudes, signed) for name, (magnitudes, signed) in space.items()}


def two_sample_chi_square(a: torch.Tensor, b: torch.Tensor) -> float:
    """Chi-square statistic of two count vectors over the same categories (df = categories - 1)."""
    a, b = a.double(), b.double()
    scale = (b.sum() / a.sum()).sqrt()
    used = (a + b) > 0
    return float(((a[used] * scale - b[used] / scale) ** 2 / (a[used] + b[used])).sum())


def test_each_bin_is_torchvisions_strength() -> None:
    """Bin i of every op is torchvision's i-th magnitude, in the ops' own units."""
    widest = wide_magnitudes(SIDE, SIDE)
    for op, (magnitudes, _) in torchvision_bins().items():
        if magnitudes.ndim == 0:
            assert widest[op] == 0, op
            continue
        for i in range(NUM_BINS):
            assert _strength(op, i / (NUM_BINS - 1) * widest[op], SIDE) == pytest.approx(float(magnitudes[i]),
                                                                                     abs=1e-5), (op, i)


def test_at_its_start_it_draws_as_torchvisions_trivial_augment_wide() -> None:
    """Op frequencies, magnitude bins and signs of the untrained policy against TrivialAugmentWide's own draws
    (two-sample chi-square under the 0.999 quantile: 13 degrees of freedom for the ops, 30 for the bins)."""
    theirs = torchvision_draws(DRAWS)
    policy = TrivialPolicy(SIDE)
    assert policy.tau.shape == (K,) and torch.all(policy.tau == 0)
    ours = policy.sample(DRAWS, torch.Generator().manual_seed(1))
    assert ours.op2 is None, "one op per sample"
    bins = torchvision_bins()
    their_ops = torch.tensor([OP_NAMES.index(op) for op, _ in theirs])
    assert two_sample_chi_square(torch.bincount(ours.op1, minlength=K), torch.bincount(their_ops, minlength=K)) < 34.5
    assert torch.bincount(ours.op1, minlength=K).min() > 0.85 * DRAWS / K

    # Bins, pooled over the ops whose 31 magnitudes are distinct (posterize's repeat: its bits are compared).
    widest = torch.tensor([wide_magnitudes(SIDE, SIDE)[op] for op in OP_NAMES])
    posterize = OP_NAMES.index("posterize")
    has_bins = (widest[ours.op1] > 0) & (ours.op1 != posterize)
    our_bins = torch.round(ours.magnitude1[has_bins] / widest[ours.op1][has_bins] * (NUM_BINS - 1)).long()
    torch.testing.assert_close(ours.magnitude1[has_bins], our_bins / (NUM_BINS - 1) * widest[ours.op1][has_bins])
    their_bins = torch.tensor([int((bins[op][0] - abs(m)).abs().argmin()) for op, m in theirs
                               if bins[op][0].ndim and op != "posterize"])
    assert two_sample_chi_square(torch.bincount(our_bins, minlength=NUM_BINS),
                                 torch.bincount(their_bins, minlength=NUM_BINS)) < 59.7
    our_bits = torch.tensor([_strength("posterize", float(m), SIDE) for m in ours.magnitude1[ours.op1 == posterize]])
    their_bits = torch.tensor([m for op, m in theirs if op == "posterize"])
    assert two_sample_chi_square(torch.bincount(our_bits.long(), minlength=9),
                                 torch.bincount(their_bits.long(), minlength=9)) < 22.5  # 6 df
    signed = torch.tensor([bins[OP_NAMES[op]][1] for op in ours.op1.tolist()])
    our_negative = float((ours.sign1[signed & (ours.magnitude1 > 0)] < 0).float().mean())
    their_negative = sum(m < 0 for op, m in theirs if bins[op][1]) / sum(m != 0 for op, m in theirs if bins[op][1])
    assert our_negative == pytest.approx(0.5, abs=0.03) and their_negative == pytest.approx(0.5, abs=0.03)


def test_applies_one_op_per_sample_in_one_grouped_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = apply_ops

    def spy(*args):  # type: ignore[no-untyped-def]
        calls.append(args)
        return real(*args)

    monkeypatch.setattr("dha_pipeline.augment.policy.apply_ops", spy)
    policy = TrivialPolicy(SIDE)
    images = torch.rand(64, 3, SIDE, SIDE)
    sample = policy.sample(64, torch.Generator().manual_seed(0))
    out = policy.apply(images, sample)
    assert len(calls) == 1
    torch.testing.assert_close(out, real(OP_NAMES, images, sample.op1, sample.magnitude1, sample.sign1))
    with torch.no_grad():
        policy.tau[OP_NAMES.index("rotate")], policy.tau[OP_NAMES.index("identity")] = 2.0, 1.0
    assert list(policy.as_dict(2)) == ["rotate", "identity"]
    assert policy.probability_grid().shape == (1, K)


def _steps(kl_weight: float, steps: int = 300) -> float:
    """KL to the start after `steps` Adam steps in which `rotate` is always the hardest op."""
    policy = TrivialPolicy(SIDE, entropy_floor_fraction=0.0, kl_weight=kl_weight)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        sample = policy.sample(128, generator)
        loss = 1.0 + (sample.op1 == OP_NAMES.index("rotate")).float()
        optimizer.zero_grad()
        policy.da_loss(sample, loss).backward()
        optimizer.step()
    assert policy.top_choices(1)[0][0] == "rotate", "the persistent signal moves it either way"
    return float(policy.kl_to_start().detach())


def test_kl_to_the_start_limits_how_far_a_persistent_signal_moves_it() -> None:
    free, held, firmly = _steps(0.0), _steps(0.2), _steps(1.0)
    assert free > held > firmly > 0


def test_kl_pulls_back_once_the_signal_stops() -> None:
    policy = TrivialPolicy(SIDE, entropy_floor_fraction=0.0, kl_weight=1.0)
    with torch.no_grad():
        policy.tau[OP_NAMES.index("solarize")] = 3.0
    before = float(policy.kl_to_start().detach())
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    sample = policy.sample(64, torch.Generator().manual_seed(0))
    for _ in range(50):  # every sample equally hard: only the KL term has a gradient
        optimizer.zero_grad()
        policy.da_loss(sample, torch.ones(64)).backward()
        optimizer.step()
    assert float(policy.kl_to_start().detach()) < 0.2 * before


@pytest.fixture(scope="module")
def digits8():  # type: ignore[no-untyped-def]
    return build_dataset(recipe_from_dict(_raw("unused")).data)


def _raw(runs: str, **augment: object) -> dict:
    return {"name": "ta_start", "runs_dir": runs, "device": "cpu",
            "data": {"image_size": SIDE, "channels": "1", "train_subset": 128},
            "model": {"init_channels": 4, "layers": 3, "auxiliary": False},
            "train": {"epochs": 1, "batch_size": 64},
            "augment": {"crop_padding": 1, "hflip": False, "cutout": 3, "start": "trivial_wide", "form": "paper",
                        **augment},
            "search": {"mode": "manual", "components": ["da"]}}


def test_a_run_with_policy_lr_zero_is_trivial_augment_on_every_sample_before_cutout(tmp_path, digits8,  # type: ignore[no-untyped-def]
                                                                                   monkeypatch) -> None:
    run = loop.SearchRun(recipe_from_dict(_raw(str(tmp_path), policy_lr=0.0)), digits8)
    assert isinstance(run.policy.policy, TrivialPolicy)
    order: list[str] = []
    for name in ("before_policy", "after_policy"):
        real = getattr(BaseAugment, name)
        monkeypatch.setattr(BaseAugment, name, lambda self, batch, generator, real=real, name=name:
                            order.append(name) or real(self, batch, generator))
    real_apply = run.policy.apply

    def spy(images, sample):  # type: ignore[no-untyped-def]
        order.append(f"policy on {len(sample)} of {len(images)}")
        return real_apply(images, sample)

    monkeypatch.setattr(run.policy, "apply", spy)
    images, labels = run.source.splits["train"].take(torch.arange(64))
    run.network.train()
    run.train_step(images, labels)
    assert order == ["before_policy", "policy on 64 of 64", "after_policy"]
    assert torch.all(run.policy.policy.tau == 0), "policy_lr = 0: it stays TrivialAugment Wide"
    report = run.policy.report()["policy"]
    assert report["start"] == "trivial_wide" and report["kl_to_start"] == pytest.approx(0.0, abs=1e-6)


def test_the_model_card_says_where_the_policy_started_and_names_single_ops() -> None:
    from dha_pipeline.report.model_card import _training

    metadata = {"hyperparameters": {"lr": 0.05, "weight_decay": 3e-4, "learned": True,
                                    "policy": {"start": "trivial_wide", "kl_to_start": 0.0123, "entropy": 2.6}},
                "base_augment": {"crop_padding": 4, "hflip": True, "cutout": 16},
                "da_policy": {"rotate": 0.09, "identity": 0.07}}
    card = "\n".join(_training(metadata))
    assert "started at trivial_wide and moved KL 0.012 nats" in card
    assert "Top ops of the learned augmentation policy" in card and "| rotate | 9" in card
