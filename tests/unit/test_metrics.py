"""Metrics (DESIGN §3.2): pass@k against brute force, entropy against torch.distributions,
token log-probs against a direct log_softmax gather."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch

from sweeper.rl.metrics import (
    entropy_from_logits,
    mean_pass_at_k,
    pass_at_k,
    token_logprobs_and_entropy,
)

torch.set_num_threads(1)


# --------------------------------------------------------------------------- pass@k


def _brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force_enumeration() -> None:
    checked = 0
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k), abs=1e-12)
                checked += 1
    assert checked == sum(n * (n + 1) for n in range(1, 9))


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 3, 1, 0.3),  # pass@1 = c/n
        (4, 0, 2, 0.0),
        (4, 4, 4, 1.0),
        (5, 1, 5, 1.0),  # n - c = 4 < k
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (8, 2, 4, 1 - 15 / 70),  # 1 - C(6,4)/C(8,4)
    ],
)
def test_pass_at_k_by_hand(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(200, 3, 100), (1000, 1, 1), (500, 17, 64)])
def test_pass_at_k_is_stable_for_large_n(n: int, c: int, k: int) -> None:
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


def test_pass_at_k_returns_a_python_float_and_accepts_integer_likes() -> None:
    assert type(pass_at_k(4, 1, 2)) is float
    assert pass_at_k(torch.tensor(4), torch.tensor(1), 2) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("n", "c", "k", "match"),
    [
        (0, 0, 1, "n >= 1"),
        (4, 5, 1, "0 <= c <= n"),
        (4, -1, 1, "0 <= c <= n"),
        (4, 1, 0, "1 <= k <= n"),
        (4, 1, 5, "1 <= k <= n"),
        (4, 0, 5, "1 <= k <= n"),  # must not return 1.0 via the n-c<k shortcut
        (4.5, 1, 1, "n must be an integer"),
        (4, True, 1, "c must be an integer"),
        (4, 1, "2", "k must be an integer"),
    ],
)
def test_pass_at_k_rejects_bad_arguments(n, c, k, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_averages_over_prompts() -> None:
    # pass@2: prompt 1: 1 - C(3,2)/C(4,2) = 0.5; prompt 2: 0; prompt 3: 1 - 0 = 1 (n - c < k)
    assert mean_pass_at_k([4, 4, 4], [1, 0, 3], 2) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert mean_pass_at_k([10, 4], [3, 1], 1) == pytest.approx((0.3 + 0.25) / 2)


def test_mean_pass_at_k_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        mean_pass_at_k([4, 4], [1], 1)
    with pytest.raises(ValueError, match="at least one prompt"):
        mean_pass_at_k([], [], 1)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        mean_pass_at_k([4, 2], [1, 1], 3)


# --------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 1.5, 4.0])
def test_entropy_matches_torch_categorical(temperature: float) -> None:
    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0)) * 3
    expected = torch.distributions.Categorical(logits=logits.double() / temperature).entropy()
    got = entropy_from_logits(logits, temperature)
    assert got.shape == (3, 5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_entropy_closed_forms() -> None:
    v = 7
    assert entropy_from_logits(torch.zeros(v)).item() == pytest.approx(math.log(v), rel=1e-6)
    # Two equally likely tokens and a masked (-inf) vocabulary entry: H = ln 2, not NaN.
    logits = torch.tensor([[3.0, 3.0, -math.inf]])
    assert entropy_from_logits(logits).tolist() == pytest.approx([math.log(2)])
    # p = (e^1, e^0)/(e+1): H = logsumexp(z) - sum p·z
    p1 = math.e / (math.e + 1)
    h = math.log(math.e + 1) - p1 * 1.0
    assert entropy_from_logits(torch.tensor([1.0, 0.0])).item() == pytest.approx(h, rel=1e-6)


def test_entropy_temperature_scales_the_logits() -> None:
    logits = torch.tensor([2.0, 0.0, -1.0])
    torch.testing.assert_close(entropy_from_logits(logits, 2.0), entropy_from_logits(logits / 2))


def test_entropy_is_stable_for_huge_logits_and_bf16() -> None:
    huge = torch.tensor([[1e4, 0.0, -1e4], [5e4, 5e4, 0.0]])
    h = entropy_from_logits(huge)
    assert torch.isfinite(h).all()
    assert h.tolist() == pytest.approx([0.0, math.log(2)], abs=1e-6)
    bf16 = torch.randn(4, 32, generator=torch.Generator().manual_seed(1)).bfloat16()
    got = entropy_from_logits(bf16)
    assert got.dtype == torch.float32
    expected = torch.distributions.Categorical(logits=bf16.double()).entropy()
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_entropy_rejects_non_positive_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        entropy_from_logits(torch.zeros(3), temperature)


# --------------------------------------------------------------------------- token log-probs


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_token_logprobs_and_entropy_match_direct_computation(temperature: float) -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 6, 13, generator=g) * 2
    tokens = torch.randint(0, 13, (2, 6), generator=g)
    logp, ent = token_logprobs_and_entropy(logits, tokens, temperature)
    direct = torch.log_softmax(logits.double() / temperature, -1)
    expected = direct.gather(-1, tokens[..., None]).squeeze(-1)
    assert logp.shape == ent.shape == (2, 6)
    torch.testing.assert_close(logp.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, entropy_from_logits(logits, temperature))
    # by hand for one position: log p = z_tok - logsumexp(z)
    z = logits[1, 4] / temperature
    assert logp[1, 4].item() == pytest.approx(
        (z[tokens[1, 4]] - torch.logsumexp(z, 0)).item(), abs=1e-5
    )


def test_token_logprobs_are_differentiable() -> None:
    logits = torch.randn(1, 2, 5, generator=torch.Generator().manual_seed(3), requires_grad=True)
    tokens = torch.tensor([[1, 4]])
    logp, _ = token_logprobs_and_entropy(logits, tokens)
    logp.sum().backward()
    # d log softmax(z)_t / dz = onehot(t) - softmax(z)
    expected = -torch.softmax(logits.detach(), -1)
    expected[0, 0, 1] += 1
    expected[0, 1, 4] += 1
    torch.testing.assert_close(logits.grad, expected)


def test_token_logprobs_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        token_logprobs_and_entropy(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        token_logprobs_and_entropy(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
