"""Truncated importance sampling (``job.rollout_correction: {kind: tis}``): the weights, and
``policy_loss(..., token_weights=...)`` against a hand-computed case and as a no-op at 1."""

from __future__ import annotations

import math

import pytest
import torch

from sweeper.config.loss import LOSS_PARAMS
from sweeper.rl.losses import policy_loss
from sweeper.rl.rollout_correction import truncated_importance_weights


def test_weights_are_the_capped_ratio_zero_on_padding() -> None:
    old = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    engine = torch.log(torch.tensor([[0.4, 0.05, 0.3]]))
    mask = torch.tensor([[1, 1, 0]])
    w = truncated_importance_weights(old, engine, mask, cap=2.0)
    # 0.5/0.4 = 1.25; 0.2/0.05 = 4 -> capped at 2; padding -> 0
    torch.testing.assert_close(w, torch.tensor([[1.25, 2.0, 0.0]]))
    assert not w.requires_grad


def test_tis_ppo_clip_hand_computed() -> None:
    """On-policy tokens (r = 1), advantage 1, token-mean: per-token loss -A·r·w, so
    loss = -(1.25 + 2.0) / 2 = -1.625 and d loss / d logp_t = -w_t / 2."""
    old = torch.log(torch.tensor([[0.5, 0.2, 0.3]]))
    engine = torch.log(torch.tensor([[0.4, 0.05, math.nan]]))  # padding may hold garbage
    mask = torch.tensor([[1, 1, 0]])
    weights = truncated_importance_weights(old, engine, mask, cap=2.0)
    logp = old.clone().requires_grad_(True)
    cfg = {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2, "agg": "token-mean"}
    out = policy_loss(logp, old, torch.tensor([1.0]), mask, cfg, token_weights=weights)
    assert float(out.loss.detach()) == pytest.approx(-1.625)
    out.loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.625, -1.0, 0.0]]))
    # The metrics stay unweighted.
    plain = policy_loss(old, old, torch.tensor([1.0]), mask, cfg)
    assert out.metrics == plain.metrics
    assert float(plain.loss) == pytest.approx(-1.0)


def test_tis_changes_a_clipped_token_only_in_scale() -> None:
    """A clipped token (A > 0, r > 1 + eps_high) keeps its clipped value, times its weight:
    -A·(1+eps)·w = -2·1.2·1.5 = -3.6, seq-mean-token-sum over one sequence."""
    old = torch.zeros(1, 1)
    logp = torch.log(torch.full((1, 1), 1.5))  # r = 1.5 > 1.2
    weights = torch.full((1, 1), 1.5)
    cfg = {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2, "agg": "seq-mean-token-sum"}
    out = policy_loss(logp, old, torch.tensor([2.0]), torch.ones(1, 1), cfg, token_weights=weights)
    assert float(out.loss) == pytest.approx(-3.6)


@pytest.mark.parametrize("kind", sorted(LOSS_PARAMS))
def test_unit_weights_equal_no_weights(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    shape = (6, 5)
    logp = torch.randn(shape, generator=gen) * 0.3 - 1.0
    old = logp + torch.randn(shape, generator=gen) * 0.3
    adv = torch.randn(shape[0], generator=gen)
    mask = (torch.rand(shape, generator=gen) > 0.2).long()
    cfg = {"kind": kind}

    def loss(weights):
        x = logp.clone().requires_grad_(True)
        out = policy_loss(
            x,
            old,
            adv,
            mask,
            cfg,
            generator=torch.Generator().manual_seed(1),
            token_weights=weights,
        )
        out.loss.backward()
        return out, x.grad

    plain, plain_grad = loss(None)
    ones, ones_grad = loss(torch.ones(shape))
    assert torch.equal(plain.loss, ones.loss) and torch.equal(plain_grad, ones_grad)
    assert plain.metrics == ones.metrics


def test_weights_of_the_wrong_shape_are_refused() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="token_weights shape"):
        policy_loss(
            x, x, torch.zeros(2), torch.ones(2, 3), {"kind": "ppo_clip"}, token_weights=x[:, :2]
        )
