"""Group advantages (DESIGN §3.1): grpo / dr_grpo by hand, all-equal groups, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from sweeper.rl.advantages import ADVANTAGE_MODES, group_advantages

torch.set_num_threads(1)

REWARDS = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])


def test_dr_grpo_by_hand() -> None:
    adv = group_advantages(REWARDS, 4, "dr_grpo")
    # group 1: mean 0.25; group 2: mean 0.5
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])


def test_grpo_by_hand() -> None:
    adv = group_advantages(REWARDS, 4, "grpo")
    # group 1: unbiased std = sqrt((0.75² + 3·0.25²)/3) = 0.5
    s1 = 0.5 + 1e-6
    # group 2: unbiased std = sqrt(4·0.5²/3) = sqrt(1/3)
    s2 = math.sqrt(1 / 3) + 1e-6
    expected = [
        0.75 / s1,
        -0.25 / s1,
        -0.25 / s1,
        -0.25 / s1,
        0.5 / s2,
        0.5 / s2,
        -0.5 / s2,
        -0.5 / s2,
    ]
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)


def test_grpo_uses_the_unbiased_std_not_the_population_std() -> None:
    adv = group_advantages(torch.tensor([0.0, 2.0]), 2, "grpo")
    # mean 1, unbiased std sqrt(2) (population std would be 1)
    assert adv.tolist() == pytest.approx([-1 / (math.sqrt(2) + 1e-6), 1 / (math.sqrt(2) + 1e-6)])


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, -3.7, 1e6 + 0.1])
def test_a_group_of_equal_rewards_gets_exactly_zero(mode: str, value: float) -> None:
    rewards = torch.tensor([value] * 3 + [0.0, 1.0, 2.0], dtype=torch.float64)
    adv = group_advantages(rewards, 3, mode)
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    # The other group (mean 1, unbiased std 1) is untouched.
    scale = 1.0 if mode == "dr_grpo" else 1.0 / (1.0 + 1e-6)
    assert adv[3:].tolist() == pytest.approx([-scale, 0.0, scale])


@pytest.mark.parametrize("mode", ADVANTAGE_MODES)
def test_group_size_one_gives_zero(mode: str) -> None:
    adv = group_advantages(torch.tensor([0.3, 1.0, 0.0]), 1, mode)
    assert adv.tolist() == [0.0, 0.0, 0.0]


def test_grpo_groups_are_centred_with_unit_unbiased_std() -> None:
    rewards = torch.rand(64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    adv = group_advantages(rewards, 8, "grpo").view(8, 8)
    assert adv.sum(1).abs().max() < 1e-9
    assert adv.std(1, correction=1).tolist() == pytest.approx([1.0] * 8, rel=1e-5)


def test_integer_and_bool_rewards_become_float32() -> None:
    adv = group_advantages(torch.tensor([True, False, False, False]), 4, "dr_grpo")
    assert adv.dtype == torch.float32
    assert adv.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])
    adv = group_advantages(torch.tensor([1, 0]), 2, "dr_grpo")
    assert adv.dtype == torch.float32 and adv.shape == (2,)


def test_float64_rewards_keep_their_dtype() -> None:
    assert group_advantages(REWARDS.double(), 4, "grpo").dtype == torch.float64


@pytest.mark.parametrize(
    ("rewards", "group_size", "mode", "match"),
    [
        (torch.zeros(6), 4, "grpo", "multiple of group_size"),
        (torch.zeros(6), 4, "dr_grpo", r"\(6\).*\(4\)"),
        (torch.zeros(4), 2, "ppo", "unknown advantage mode 'ppo'; valid: grpo, dr_grpo"),
        (torch.zeros(2, 4), 4, "grpo", "1-D"),
        (torch.zeros(4), 0, "grpo", "group_size"),
        (torch.zeros(4), 2.0, "grpo", "group_size"),
        (torch.tensor([0.0, math.nan]), 2, "grpo", "NaN"),
        (torch.tensor([0.0, math.inf]), 2, "dr_grpo", "inf"),
    ],
)
def test_bad_input_raises_value_error(rewards, group_size, mode, match) -> None:
    with pytest.raises(ValueError, match=match):
        group_advantages(rewards, group_size, mode)
