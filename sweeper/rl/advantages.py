"""Group-relative advantages for GRPO-style RLVR (DESIGN §3.1).

Rewards of one step are laid out in contiguous groups of ``group_size`` responses to the same
prompt; each response's advantage compares its reward with its group's:

- ``grpo`` (Shao et al. 2024, arXiv 2402.03300): (R - group mean) / (unbiased group std + 1e-6);
- ``dr_grpo`` (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv 2503.20783):
  R - group mean (no std division, which biases toward easy/hard prompts).

A group whose rewards are all equal carries no signal and gets advantage exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ADVANTAGE_MODES", "GRPO_STD_EPS", "group_advantages"]

GRPO_STD_EPS = 1e-6
"""Added to the group std in ``grpo`` so a near-constant group does not blow up."""


def _grpo(centered: Tensor, grouped: Tensor) -> Tensor:
    return centered / (grouped.std(dim=1, correction=1, keepdim=True) + GRPO_STD_EPS)


def _dr_grpo(centered: Tensor, grouped: Tensor) -> Tensor:
    return centered


_MODES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"grpo": _grpo, "dr_grpo": _dr_grpo}
ADVANTAGE_MODES: tuple[str, ...] = tuple(_MODES)


def group_advantages(rewards: Tensor, group_size: int, mode: str) -> Tensor:
    """Per-response advantages from rewards laid out in contiguous groups.

    Args:
        rewards: [N] rewards; responses ``g*group_size .. (g+1)*group_size - 1`` share a prompt.
        group_size: responses per prompt (>= 1; N must be a multiple of it).
        mode: ``grpo`` or ``dr_grpo``.

    Returns:
        [N] float advantages (float32 unless ``rewards`` is a wider float), on rewards' device.

    Raises:
        ValueError: a non-1-D or non-finite ``rewards``, a bad ``group_size``, N not a multiple
            of it, or an unknown ``mode``.
    """
    try:
        reduce = _MODES[mode]
    except KeyError:
        raise ValueError(
            f"unknown advantage mode {mode!r}; valid: {', '.join(ADVANTAGE_MODES)}"
        ) from None
    rewards = torch.as_tensor(rewards)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    n = rewards.shape[0]
    if n % group_size:
        raise ValueError(f"number of rewards ({n}) is not a multiple of group_size ({group_size})")
    if not rewards.is_floating_point() or rewards.dtype in (torch.float16, torch.bfloat16):
        rewards = rewards.float()
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")

    grouped = rewards.view(-1, group_size)  # [G, group_size]
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    # An all-equal group: exactly 0 (the float mean of equal values need not equal them, and the
    # unbiased std of a group of one is NaN).
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    if group_size == 1:
        adv = torch.zeros_like(grouped)
    else:
        adv = torch.where(constant, torch.zeros_like(grouped), reduce(centered, grouped))
    return adv.reshape(n)
