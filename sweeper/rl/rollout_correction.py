"""Off-policy correction for rollouts sampled by an engine other than the trainer (vLLM).

The engine's numerics (kernels, dtype, batching) make its sampling distribution differ slightly
from the trainer's, so the rollouts are a little off-policy even before any update. The job keeps
the trainer's log-probs as ``old_logp`` (the engine's never enter the PPO ratio) and, with
``job.rollout_correction: {kind: tis, cap: C}``, reweights each token's loss by
:func:`truncated_importance_weights`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["truncated_importance_weights"]


@torch.no_grad()
def truncated_importance_weights(
    old_logp: Tensor, engine_logp: Tensor, mask: Tensor, cap: float
) -> Tensor:
    """[B, T] min(exp(old_logp - engine_logp), cap), detached, 0 where ``mask`` is 0.

    Truncated importance sampling (Yao et al. 2025, "Your Efficient RL Framework Secretly
    Brings You Off-Policy RL Training"; verl's ``tis_imp_ratio_cap``, TRL's
    ``vllm_importance_sampling_cap``): the ratio of the trainer's probability of the sampled
    token to the engine's that sampled it, capped so a token the engine under-rates cannot
    dominate the update. Pass it as ``policy_loss(..., token_weights=...)``.

    Args:
        old_logp: [B, T] the trainer's log-probs of the sampled tokens (pre-update policy).
        engine_logp: [B, T] the engine's log-probs of the same tokens.
        mask: [B, T] 1 on response tokens.
        cap: upper bound of a weight (>= 1).
    """
    weights = torch.exp(old_logp.float() - engine_logp.float()).clamp(max=cap)
    return torch.where(mask != 0, weights, torch.zeros_like(weights))
