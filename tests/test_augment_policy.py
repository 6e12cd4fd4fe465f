"""The learned DA policy: sampling, grouped apply, the adversarial tau loss and its entropy floor."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable

import pytest
import torch
from torch.nn import functional as F

from dha_pipeline.augment.ops import OP_NAMES, OPS
from dha_pipeline.augment.policy import AugmentPolicy, PolicySample, apply_ops, apply_ops_masked

K = len(OP_NAMES)


def images(n: int, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Random images on the 8-bit grid."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=generator).float() / 255


def peaked_policy(seed: int = 0, **kwargs: float) -> AugmentPolicy:
    policy = AugmentPolicy(**kwargs)
    with torch.no_grad():
        policy.tau.copy_(torch.randn(K * K, generator=torch.Generator().manual_seed(seed)) * 2)
    return policy


def test_defaults() -> None:
    policy = AugmentPolicy()
    assert policy.tau.shape == (196,) and torch.all(policy.tau == 0)
    assert policy.temperature == 2.0 and policy.max_magnitude == 10.0
    assert policy.max_entropy == pytest.approx(math.log(196))
    assert policy.entropy().item() == pytest.approx(math.log(196), abs=1e-5)
    assert policy.entropy_floor == pytest.approx(0.5 * math.log(196))
    torch.testing.assert_close(policy.probs(), torch.full((196,), 1 / 196))


def test_sample_shapes_and_ranges() -> None:
    sample = AugmentPolicy().sample(1000, torch.Generator().manual_seed(0))
    assert len(sample) == 1000
    for field in (sample.pair, sample.op1, sample.op2, sample.magnitude1, sample.magnitude2, sample.sign1,
                  sample.sign2):
        assert field.shape == (1000,)
    assert sample.pair.dtype == torch.long and 0 <= sample.pair.min() and sample.pair.max() < K * K
    torch.testing.assert_close(sample.op1 * K + sample.op2, sample.pair)
    for magnitude in (sample.magnitude1, sample.magnitude2):
        assert magnitude.min() >= 0 and magnitude.max() <= 10 and magnitude.std() > 2
    for sign in (sample.sign1, sample.sign2):
        assert set(sign.tolist()) == {-1.0, 1.0}


def test_same_seed_same_sample() -> None:
    policy = peaked_policy()
    first, second = (policy.sample(64, torch.Generator().manual_seed(7)) for _ in range(2))
    for name in PolicySample.__dataclass_fields__:
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert not torch.equal(first.pair, policy.sample(64, torch.Generator().manual_seed(8)).pair)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_frequencies_follow_tempered_distribution() -> None:
    policy = peaked_policy()
    n = 20_000
    counts = torch.bincount(policy.sample(n, torch.Generator().manual_seed(1)).pair, minlength=K * K).double()
    tempered = F.softmax(F.log_softmax(policy.tau.detach().double(), 0) / policy.temperature, 0)
    # 195 degrees of freedom: mean 195, standard deviation about 20.
    assert chi_square(counts, tempered) < 300
    assert chi_square(counts, policy.probs().detach().double()) > 1000


def reference_apply(policy: AugmentPolicy, batch: torch.Tensor, sample: PolicySample) -> torch.Tensor:
    """Sample by sample, the loop that `apply` must avoid."""
    out = []
    for i in range(batch.shape[0]):
        x = batch[i:i + 1]
        for op, magnitude, sign in ((sample.op1, sample.magnitude1, sample.sign1),
                                    (sample.op2, sample.magnitude2, sample.sign2)):
            x = OPS[policy.op_names[op[i]]](x, magnitude[i:i + 1], sign[i:i + 1])
        out.append(x)
    return torch.cat(out)


@pytest.mark.parametrize("channels", [1, 3])
def test_apply_matches_per_sample_loop(channels: int) -> None:
    policy = AugmentPolicy()
    batch = images(96, channels)
    sample = policy.sample(96, torch.Generator().manual_seed(3))
    out = policy.apply(batch, sample)
    assert out.shape == batch.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, reference_apply(policy, batch, sample), atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_sync_free_apply_gives_the_grouped_result(channels: int) -> None:
    """The accelerator form (every op on the batch, samples keep their own) equals the grouped CPU form."""
    policy = AugmentPolicy()
    batch = images(96, channels)
    sample = policy.sample(96, torch.Generator().manual_seed(5))
    for op, magnitude, sign in ((sample.op1, sample.magnitude1, sample.sign1),
                                (sample.op2, sample.magnitude2, sample.sign2)):
        grouped = apply_ops(policy.op_names, batch, op, magnitude, sign)
        masked = apply_ops_masked(policy.op_names, batch, op, magnitude, sign)
        torch.testing.assert_close(masked, grouped, atol=1e-5, rtol=0)


def test_apply_groups_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: Counter[str] = Counter()

    def counting(name: str, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def wrapped(*args: torch.Tensor) -> torch.Tensor:
            calls[name] += 1
            return fn(*args)
        return wrapped

    for name in OP_NAMES:
        monkeypatch.setitem(OPS, name, counting(name, OPS[name]))
    policy = AugmentPolicy()
    policy.apply(images(256, size=32), policy.sample(256, torch.Generator().manual_seed(0)))
    assert sum(calls.values()) <= 2 * K
    assert max(calls.values()) <= 2


def test_da_loss_raises_probability_of_hardest_pair() -> None:
    policy = AugmentPolicy()
    sample = policy.sample(256, torch.Generator().manual_seed(0))
    hardest = sample.pair[0]
    per_sample_loss = 1.0 + 5.0 * (sample.pair == hardest).float()
    before = policy.tau.detach().clone()
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    policy.da_loss(sample, per_sample_loss).backward()
    optimizer.step()
    change = policy.tau.detach() - before
    seen = torch.zeros(K * K, dtype=torch.bool)
    seen[sample.pair] = True
    easier = seen.clone()
    easier[hardest] = False
    assert change[hardest] > 0
    assert torch.all(change[easier] < 0)
    assert torch.all(change[~seen] == 0)  # nothing was learned about pairs that were not drawn


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_da_loss_gradient_is_unbiased(temperature: float) -> None:
    """Averaged over many draws, grad L_DA equals the exact -grad E_{k~P}[l_k], for any temperature.

    (Eq. 2 taken literally, -(1/n) sum p_k l_k on draws from q, has a cosine of about -0.6 to -0.75 with it here.)
    """
    generator = torch.Generator().manual_seed(0)
    policy = AugmentPolicy(temperature=temperature, entropy_floor_fraction=0.0)
    with torch.no_grad():
        policy.tau.copy_(1.5 * torch.randn(K * K, generator=generator))
    pair_loss = torch.rand(K * K, generator=generator)
    exact = torch.autograd.grad(-(policy.probs() * pair_loss).sum(), policy.tau)[0]
    sample = policy.sample(200_000, generator)
    estimate = torch.autograd.grad(policy.da_loss(sample, pair_loss[sample.pair]), policy.tau)[0]
    assert torch.nn.functional.cosine_similarity(estimate, exact, dim=0) > 0.99
    assert torch.linalg.vector_norm(estimate - exact) < 0.1 * torch.linalg.vector_norm(exact)


def test_gradient_reaches_only_tau() -> None:
    policy = AugmentPolicy()
    weight = torch.nn.Parameter(torch.ones(3))
    batch = images(32)
    sample = policy.sample(32, torch.Generator().manual_seed(0))
    per_sample_loss = (policy.apply(batch, sample).mean(dim=(2, 3)) * weight).sum(dim=1)
    policy.da_loss(sample, per_sample_loss).backward()
    assert weight.grad is None
    assert policy.tau.grad is not None and policy.tau.grad.abs().sum() > 0


def test_entropy_floor() -> None:
    uniform = AugmentPolicy()
    penalty = uniform.floor_penalty()
    penalty.backward()
    assert penalty.item() == 0.0 and torch.all(uniform.tau.grad == 0)

    collapsed = AugmentPolicy(entropy_floor_fraction=0.5, floor_weight=1.0)
    with torch.no_grad():
        collapsed.tau[0] = 12.0
    entropy = collapsed.entropy().item()
    assert entropy < collapsed.entropy_floor
    sample = collapsed.sample(16, torch.Generator().manual_seed(0))
    loss = collapsed.da_loss(sample, torch.zeros(16))
    assert loss.item() == pytest.approx(collapsed.entropy_floor - entropy, rel=1e-5)
    optimizer = torch.optim.Adam(collapsed.parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    assert collapsed.entropy().item() > entropy


def test_top_choices_and_as_dict() -> None:
    policy = AugmentPolicy()
    with torch.no_grad():
        policy.tau[OP_NAMES.index("rotate") * K + OP_NAMES.index("solarize")] = 3.0
        policy.tau[OP_NAMES.index("equalize") * K + OP_NAMES.index("equalize")] = 2.0
    top = policy.top_choices(2)
    assert [name for name, _ in top] == ["rotate+solarize", "equalize+equalize"]
    assert top[0][1] == pytest.approx(policy.probs().max().item())
    table = policy.as_dict()
    assert len(table) == 20 and list(table)[:2] == ["rotate+solarize", "equalize+equalize"]
    assert list(table.values()) == sorted(table.values(), reverse=True)


def test_state_dict_round_trip() -> None:
    policy = peaked_policy(temperature=3.0)
    buffer = io.BytesIO()
    torch.save(policy.state_dict(), buffer)
    buffer.seek(0)
    restored = AugmentPolicy(temperature=3.0)
    restored.load_state_dict(torch.load(buffer))
    assert list(restored.state_dict()) == ["tau"]
    torch.testing.assert_close(restored.probs(), policy.probs())
    generator = torch.Generator().manual_seed(5)
    assert torch.equal(restored.sample(32, generator.clone_state()).pair, policy.sample(32, generator).pair)
