"""Policy losses (DESIGN §3.1): hand-computed values and gradients for every kind, the
equivalences between kinds, aggregation modes, metrics and config errors.

Expected numbers are written from the definitions (r = exp(logp - old_logp), L1 = -A·r,
L2 = -A·clip(r, 1-eps_low, 1+eps_high)), not by calling the implementation. Most tests set
old_logp = 0 and logp = log r, so d(loss)/d(logp) of an unclipped token is -A·r·weight.
"""

from __future__ import annotations

import math

import pytest
import torch

from sweeper.config.loss import AGGREGATIONS, LOSS_PARAMS, PPOClipLoss
from sweeper.errors import InputError
from sweeper.rl.losses import (
    METRIC_KEYS,
    POLICY_LOSSES,
    LossConfig,
    LossOutput,
    LossTotals,
    aggregate,
    get_policy_loss,
    needs_current_logp,
    plan_mini_batch,
    policy_loss,
    register,
)

torch.set_num_threads(1)

ALL_KINDS = sorted(LOSS_PARAMS)
LN = math.log


def _run(
    config: dict | object,
    ratios: list[list[float]],
    adv: list[list[float]] | list[float],
    mask: list[list[int]] | None = None,
    **kwargs: object,
) -> tuple[LossOutput, torch.Tensor]:
    """policy_loss with old_logp = 0 and logp = log(ratios); returns (output, d loss/d logp)."""
    logp = torch.tensor(ratios, dtype=torch.float32).log().requires_grad_(True)
    old = torch.zeros_like(logp)
    a = torch.tensor(adv, dtype=torch.float32)
    m = torch.ones_like(logp) if mask is None else torch.tensor(mask, dtype=torch.float32)
    out = policy_loss(logp, old, a, m, config, **kwargs)
    out.loss.backward()
    return out, logp.grad


def _run_logp(
    config: dict | object, logp: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, mask, **kw
) -> tuple[LossOutput, torch.Tensor]:
    logp = logp.detach().clone().requires_grad_(True)
    out = policy_loss(logp, old, adv, mask, config, **kw)
    out.loss.backward()
    return out, logp.grad


def _random_batch(seed: int, b: int = 4, t: int = 7, scale: float = 0.4):
    """Random (logp, old_logp, advantages [B], ragged mask) with an all-masked last row."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(b, t, generator=g) * 3
    logp = old + torch.randn(b, t, generator=g) * scale
    adv = torch.randn(b, generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[-1] = 0
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    return logp, old, adv, mask


def _approx(x: float) -> object:
    return pytest.approx(x, rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- ppo_clip

PPO = {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28}

# (r, A, per-token loss, d loss/d logp) by hand for eps_low 0.2, eps_high 0.28.
PPO_CASES = [
    (1.5, 2.0, -2.0 * 1.28, 0.0),  # A>0, r > 1.28: clipped high, no gradient
    (1.1, 2.0, -2.2, -2.2),  # inside: L1
    (0.5, -0.5, 0.5 * 0.8, 0.0),  # A<0, r < 0.8: clipped low, no gradient
    (0.9, -0.5, 0.45, 0.45),  # inside
    (0.5, 1.0, -0.5, -0.5),  # A>0 below the low bound: not clipped (pessimistic side)
    (2.0, -1.0, 2.0, 2.0),  # A<0 above the high bound: not clipped
    (1.0, 0.0, 0.0, 0.0),  # A = 0
]


@pytest.mark.parametrize(("r", "a", "loss", "grad"), PPO_CASES)
def test_ppo_clip_single_token_by_hand(r: float, a: float, loss: float, grad: float) -> None:
    out, g = _run(PPO, [[r]], [a])
    assert out.loss.item() == _approx(loss)
    assert g.item() == _approx(grad)
    if grad == 0.0:
        assert g.item() == 0.0  # exactly zero, not merely small


def test_ppo_clip_batch_token_mean_and_metrics_by_hand() -> None:
    ratios = [[c[0] for c in PPO_CASES]]
    adv = [[c[1] for c in PPO_CASES]]
    out, g = _run(PPO, ratios, adv)
    n = len(PPO_CASES)
    assert out.loss.item() == _approx((-2.56 - 2.2 + 0.4 + 0.45 - 0.5 + 2.0 + 0.0) / n)
    assert g[0].tolist() == pytest.approx([c[3] / n for c in PPO_CASES], abs=1e-6)
    assert out.metrics["clip_high_frac"] == pytest.approx(1 / n)
    assert out.metrics["clip_low_frac"] == pytest.approx(1 / n)
    assert out.metrics["dual_clip_frac"] == 0.0
    assert out.metrics["rescued_frac"] == 0.0
    assert out.metrics["cov_selected_frac"] == 0.0
    # approx_kl = mean(old_logp - logp) = -mean(log r)
    assert out.metrics["approx_kl"] == _approx(-LN(1.5 * 1.1 * 0.5 * 0.9 * 0.5 * 2.0) / n)


def test_ppo_clip_dual_clip_by_hand() -> None:
    cfg = {**PPO, "dual_clip_c": 3.0}
    # A<0, r=4 > c: -A·c = 3·0.5 with zero gradient; A<0, r=2 < c: untouched L1;
    # A>0, r=4: clipped high (dual clip is for A<0 only).
    out, g = _run(cfg, [[4.0, 2.0, 4.0]], [[-0.5, -1.0, 1.0]])
    assert out.loss.item() == _approx((1.5 + 2.0 - 1.28) / 3)
    assert g[0].tolist() == pytest.approx([0.0, 2.0 / 3, 0.0], abs=1e-6)
    assert g[0, 0].item() == 0.0
    assert out.metrics["dual_clip_frac"] == pytest.approx(1 / 3)
    assert out.metrics["clip_high_frac"] == pytest.approx(1 / 3)


def test_ppo_clip_without_dual_clip_keeps_large_negative_ratios() -> None:
    out, g = _run(PPO, [[4.0]], [[-0.5]])
    assert out.loss.item() == _approx(2.0)
    assert g.item() == _approx(2.0)
    assert out.metrics["dual_clip_frac"] == 0.0


def test_eps_high_inf_never_clips_high() -> None:
    cfg = {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": math.inf}
    out, g = _run(cfg, [[100.0, 3.0]], [[1.0, 2.0]])
    assert out.loss.item() == _approx((-100.0 - 6.0) / 2)
    assert g[0].tolist() == pytest.approx([-50.0, -3.0])
    assert out.metrics["clip_high_frac"] == 0.0


@pytest.mark.parametrize("kind", ["ppo_clip", "nsr", "clip_cov", "gppo"])
def test_eps_high_inf_is_finite_for_every_clipping_kind(kind: str) -> None:
    logp, old, adv, mask = _random_batch(3, scale=2.0)
    out, g = _run_logp({"kind": kind, "eps_high": math.inf}, logp, old, adv, mask)
    assert torch.isfinite(out.loss)
    assert torch.isfinite(g).all()
    assert out.metrics["clip_high_frac"] == 0.0


def test_eps_low_one_allowed_never_clips_low() -> None:
    cfg = {"kind": "ppo_clip", "eps_low": 1.0, "eps_high": 0.2}
    out, g = _run(cfg, [[0.01]], [[-1.0]])
    assert out.loss.item() == _approx(0.01)
    assert g.item() == _approx(0.01)
    assert out.metrics["clip_low_frac"] == 0.0


def test_log_ratio_is_clamped_to_20() -> None:
    logp = torch.tensor([[50.0]], requires_grad=True)
    out = policy_loss(logp, torch.zeros(1, 1), torch.tensor([-1.0]), torch.ones(1, 1), PPO)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(math.exp(20.0), rel=1e-5)
    assert logp.grad.item() == 0.0  # beyond the clamp


# --------------------------------------------------------------------------- aggregation

# r = 1 everywhere, so the per-token loss is -A; row 1 is all masked.
AGG_ADV = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]]
AGG_MASK = [[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
# (agg, norm_len, loss, weight of each valid token of row 0, weight of row 2's token)
AGG_CASES = [
    ("token-mean", None, -15.0 / 4, 1 / 4, 1 / 4),  # (-1-2-3-9)/4
    ("seq-mean-token-mean", None, (-2.0 - 9.0) / 2, 1 / 6, 1 / 2),  # rows 0 and 2 only
    ("seq-mean-token-sum", None, (-6.0 - 9.0) / 2, 1 / 2, 1 / 2),  # non-empty rows
    ("seq-mean-token-sum-norm", None, -15.0 / (3 * 4), 1 / 12, 1 / 12),  # B·T
    ("seq-mean-token-sum-norm", 5, -15.0 / (3 * 5), 1 / 15, 1 / 15),  # B·norm_len
]


@pytest.mark.parametrize(("agg", "norm_len", "loss", "w0", "w2"), AGG_CASES)
def test_aggregation_modes_on_ragged_mask_by_hand(
    agg: str, norm_len: int | None, loss: float, w0: float, w2: float
) -> None:
    cfg = {"kind": "ppo_clip", "agg": agg}
    ones = [[1.0] * 4 for _ in range(3)]
    out, g = _run(cfg, ones, AGG_ADV, AGG_MASK, norm_len=norm_len)
    assert out.loss.item() == _approx(loss)
    expected = torch.zeros(3, 4)
    expected[0, :3] = -torch.tensor(AGG_ADV[0][:3]) * w0
    expected[2, 0] = -AGG_ADV[2][0] * w2
    torch.testing.assert_close(g, expected)


def test_aggregate_is_public_and_rejects_unknown_mode() -> None:
    per_token = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    assert aggregate(per_token, mask, "token-mean").item() == pytest.approx(8 / 3)
    assert aggregate(per_token, mask, "seq-mean-token-sum-norm", 4).item() == pytest.approx(8 / 8)
    with pytest.raises(InputError, match="agg"):
        aggregate(per_token, mask, "sum")


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("agg", sorted(set(a for a, *_ in AGG_CASES)))
def test_all_masked_batch_gives_zero_without_nan(kind: str, agg: str) -> None:
    cfg = {"kind": kind} if kind == "gspo" else {"kind": kind, "agg": agg}
    logp = torch.randn(2, 3).requires_grad_(True)
    out = policy_loss(logp, torch.randn(2, 3), torch.ones(2), torch.zeros(2, 3), cfg)
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert torch.equal(logp.grad, torch.zeros(2, 3))
    assert all(v == 0.0 for v in out.metrics.values())


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_masked_padding_with_inf_and_nan_does_not_leak(kind: str) -> None:
    logp, old, adv, mask = _random_batch(5)
    clean, g_clean = _run_logp({"kind": kind}, logp, old, adv, mask, generator=_gen(1))
    dirty_logp = torch.where(mask.bool(), logp, torch.full_like(logp, math.nan))
    dirty_old = torch.where(mask.bool(), old, torch.full_like(old, -math.inf))
    dirty, g_dirty = _run_logp({"kind": kind}, dirty_logp, dirty_old, adv, mask, generator=_gen(1))
    assert dirty.loss.item() == pytest.approx(clean.loss.item(), abs=1e-6)
    assert torch.isfinite(g_dirty).all()
    torch.testing.assert_close(g_dirty, g_clean)
    assert dirty.metrics == pytest.approx(clean.metrics)


# --------------------------------------------------------------------------- metrics & API


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_returns_the_same_metric_keys(kind: str) -> None:
    logp, old, adv, mask = _random_batch(0)
    out, _ = _run_logp({"kind": kind}, logp, old, adv, mask, generator=_gen(0))
    assert tuple(out.metrics) == METRIC_KEYS
    assert all(type(v) is float and math.isfinite(v) for v in out.metrics.values())
    assert out.loss.dim() == 0


def test_metric_fractions_count_only_valid_tokens() -> None:
    # Token 1 would be clipped high but is masked; 1 of 2 valid tokens is clipped low.
    out, _ = _run(PPO, [[0.5, 1.5, 1.0]], [[-1.0, 1.0, 1.0]], [[1, 0, 1]])
    assert out.metrics["clip_low_frac"] == pytest.approx(0.5)
    assert out.metrics["clip_high_frac"] == 0.0
    assert out.metrics["approx_kl"] == pytest.approx(-LN(0.5) / 2)


def test_kinds_that_do_not_clip_report_zero_clip_fractions() -> None:
    out, _ = _run({"kind": "kl_cov"}, [[0.1, 5.0]], [[-1.0, 1.0]])
    assert out.metrics["clip_low_frac"] == 0.0
    assert out.metrics["clip_high_frac"] == 0.0
    assert out.metrics["dual_clip_frac"] == 0.0


def test_advantages_per_sequence_broadcast_equals_per_token() -> None:
    logp, old, adv, mask = _random_batch(2)
    a, ga = _run_logp(PPO, logp, old, adv, mask)
    b, gb = _run_logp(PPO, logp, old, adv[:, None].expand_as(logp), mask)
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(ga, gb)


def test_bool_and_float_masks_agree() -> None:
    logp, old, adv, mask = _random_batch(4)
    a, _ = _run_logp(PPO, logp, old, adv, mask)
    b, _ = _run_logp(PPO, logp, old, adv, mask.bool())
    assert torch.equal(a.loss, b.loss)


def test_bfloat16_inputs_get_float32_math_and_bf16_gradients() -> None:
    logp, old, adv, mask = _random_batch(6)
    out, g = _run_logp(PPO, logp.bfloat16(), old.bfloat16(), adv, mask)
    assert out.loss.dtype == torch.float32
    assert g.dtype == torch.bfloat16
    assert torch.isfinite(g.float()).all()


def test_shape_mismatch_raises_value_error() -> None:
    logp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="old_logp"):
        policy_loss(logp, torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3), PPO)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, logp, torch.zeros(3), torch.ones(2, 3), PPO)
    with pytest.raises(ValueError, match="mask"):
        policy_loss(logp, logp, torch.zeros(2), torch.ones(3, 2), PPO)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        policy_loss(torch.zeros(6), torch.zeros(6), torch.zeros(6), torch.ones(6), PPO)
    with pytest.raises(ValueError, match="norm_len"):
        policy_loss(logp, logp, torch.zeros(2), torch.ones(2, 3), PPO, norm_len=0)


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"kind": "ppo_clip", "eps_low": 1.5}, "eps_low"),
        ({"kind": "ppo_clip", "eps_low": -0.1}, "eps_low"),
        ({"kind": "ppo_clip", "eps_high": -0.1}, "eps_high"),
        ({"kind": "ppo_clip", "dual_clip_c": 0.5}, "dual_clip_c"),
        ({"kind": "ppo_clip", "agg": "sum"}, "agg"),
        ({"kind": "nsr", "rescue_prob": 1.5}, "rescue_prob"),
        ({"kind": "nsr", "rescue_margin": -0.1}, "rescue_margin"),
        ({"kind": "nsr", "rescue_sides": "left"}, "rescue_sides"),
        ({"kind": "clip_cov", "cov_ratio": 0.0}, "cov_ratio"),
        ({"kind": "clip_cov", "cov_lb": 5.0, "cov_ub": 1.0}, "cov_lb"),
        ({"kind": "kl_cov", "kl_coef": -1.0}, "kl_coef"),
        ({"kind": "gppo", "beta_high": -1.0}, "beta_high"),
        ({"kind": "ppo_clip", "rescue_prob": 0.5}, "rescue_prob"),  # foreign key
        ({"kind": "kl_cov", "eps_low": 0.2}, "eps_low"),  # kl_cov does not clip
        ({"kind": "gspo", "agg": "token-mean"}, "agg"),  # gspo's aggregation is fixed
        ({"kind": "ppo_clip", "eps_hgih": 0.3}, "eps_hgih"),  # typo
        ({"kind": "ppo_klip"}, "ppo_klip"),  # unknown kind
    ],
)
def test_bad_config_raises_input_error_naming_the_field(config: dict, field: str) -> None:
    logp = torch.zeros(1, 2)
    with pytest.raises(InputError, match=field):
        policy_loss(logp, logp, torch.ones(1), torch.ones(1, 2), config)


def test_unknown_kind_lists_the_valid_kinds() -> None:
    with pytest.raises(InputError) as err:
        policy_loss(
            torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), {"kind": "x"}
        )
    for kind in ALL_KINDS:
        assert kind in str(err.value)


def test_config_can_be_a_validated_model() -> None:
    from pydantic import TypeAdapter

    model = TypeAdapter(LossConfig).validate_python({"kind": "ppo_clip", "eps_high": 0.28})
    assert isinstance(model, PPOClipLoss)
    a, _ = _run(model, [[1.5]], [[1.0]])
    b, _ = _run(PPO, [[1.5]], [[1.0]])
    assert a.loss.item() == b.loss.item() == pytest.approx(-1.28)


def test_default_kind_is_ppo_clip() -> None:
    out, _ = _run({"eps_high": 0.28}, [[1.5]], [[1.0]])
    assert out.loss.item() == pytest.approx(-1.28)


# --------------------------------------------------------------------------- registry


def test_registry_matches_config_kinds_and_documents_papers() -> None:
    assert set(POLICY_LOSSES) == set(LOSS_PARAMS)
    for kind, fn in POLICY_LOSSES.items():
        assert "arXiv" in (fn.__doc__ or ""), kind


def test_register_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("ppo_clip")(lambda batch, cfg: None)
    assert POLICY_LOSSES["ppo_clip"].__name__ == "ppo_clip_loss"


def test_register_new_kind_then_remove() -> None:
    def fake(batch, cfg):  # pragma: no cover - never called
        raise AssertionError

    try:
        register("tmp_test_kind")(fake)
        assert get_policy_loss("tmp_test_kind") is fake
    finally:
        POLICY_LOSSES.pop("tmp_test_kind", None)
    assert "tmp_test_kind" not in POLICY_LOSSES


def test_registry_miss_lists_valid_names() -> None:
    with pytest.raises(
        InputError, match="valid kinds: clip_cov, gppo, gspo, kl_cov, nsr, ppo_clip"
    ):
        get_policy_loss("nope")


# --------------------------------------------------------------------------- nsr

NSR = {"kind": "nsr", "eps_low": 0.2, "eps_high": 0.28, "rescue_margin": 0.1}
# Bands for eps 0.2/0.28, m 0.1: high (1.28, 1.408], low [0.72, 0.8).
# Tokens: high band, low band, inside, beyond the high band, beyond the low band.
NSR_R = [[1.35, 0.75, 1.0, 1.6, 0.6]]
NSR_A = [[1.0, -1.0, 1.0, 1.0, -1.0]]


@pytest.mark.parametrize(
    ("sides", "losses", "grads", "rescued"),
    [
        ("both", [-1.35, 0.75, -1.0, -1.28, 0.8], [-1.35, 0.75, -1.0, 0.0, 0.0], 2),
        ("high", [-1.35, 0.8, -1.0, -1.28, 0.8], [-1.35, 0.0, -1.0, 0.0, 0.0], 1),
        ("low", [-1.28, 0.75, -1.0, -1.28, 0.8], [0.0, 0.75, -1.0, 0.0, 0.0], 1),
    ],
)
def test_nsr_rescue_sides_by_hand(
    sides: str, losses: list[float], grads: list[float], rescued: int
) -> None:
    cfg = {**NSR, "rescue_prob": 1.0, "rescue_sides": sides}
    out, g = _run(cfg, NSR_R, NSR_A)
    assert out.loss.item() == _approx(sum(losses) / 5)
    assert g[0].tolist() == pytest.approx([x / 5 for x in grads], abs=1e-6)
    assert out.metrics["rescued_frac"] == pytest.approx(rescued / 5)
    # Clip fractions count tokens beyond the bound, rescued or not.
    assert out.metrics["clip_high_frac"] == pytest.approx(2 / 5)
    assert out.metrics["clip_low_frac"] == pytest.approx(2 / 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dual", [None, 1.5])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-sum-norm"])
def test_nsr_with_rescue_prob_zero_equals_ppo_clip(seed: int, dual: float | None, agg: str) -> None:
    logp, old, adv, mask = _random_batch(seed, scale=0.5)
    base = {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": dual, "agg": agg}
    nsr = {"kind": "nsr", **base, "rescue_prob": 0.0, "rescue_margin": 0.5}
    a, ga = _run_logp(nsr, logp, old, adv, mask, generator=_gen(seed))
    b, gb = _run_logp({"kind": "ppo_clip", **base}, logp, old, adv, mask)
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(ga, gb)
    assert a.metrics["rescued_frac"] == 0.0
    assert {k: v for k, v in a.metrics.items() if k != "rescued_frac"} == {
        k: v for k, v in b.metrics.items() if k != "rescued_frac"
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nsr_with_rescue_prob_one_equals_ppo_clip_with_widened_bounds(seed: int) -> None:
    eps_low, eps_high, m = 0.2, 0.28, 0.1
    wide_high = (1 + eps_high) * (1 + m) - 1  # 0.408
    wide_low = 1 - (1 - eps_low) * (1 - m)  # 0.28
    g = _gen(seed)
    # Ratios strictly inside the widened bounds [0.72, 1.408], many of them in the bands.
    ratios = 0.73 + torch.rand(3, 8, generator=g) * (1.40 - 0.73)
    ratios[0, :4] = torch.tensor([1.30, 1.39, 0.74, 0.79])  # surely in the bands
    adv = torch.tensor([1.0, -1.0, 0.5])[:, None] * torch.tensor([1.0, -1.0] * 4)
    logp = ratios.log()
    nsr = {**NSR, "rescue_prob": 1.0}
    wide = {"kind": "ppo_clip", "eps_low": wide_low, "eps_high": wide_high}
    a, ga = _run_logp(nsr, logp, torch.zeros_like(logp), adv, torch.ones_like(logp))
    b, gb = _run_logp(wide, logp, torch.zeros_like(logp), adv, torch.ones_like(logp))
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-6)
    torch.testing.assert_close(ga, gb)
    assert b.metrics["clip_low_frac"] == b.metrics["clip_high_frac"] == 0.0
    in_band = ((adv > 0) & (ratios > 1.28)) | ((adv < 0) & (ratios < 0.8))
    assert a.metrics["rescued_frac"] == pytest.approx(in_band.float().mean().item())
    assert a.metrics["rescued_frac"] > 0


def test_nsr_tokens_beyond_the_band_stay_clipped_at_the_original_bound() -> None:
    out, g = _run({**NSR, "rescue_prob": 1.0}, [[1.6], [0.5]], [1.0, -1.0])
    assert out.loss.item() == _approx((-1.28 + 0.8) / 2)
    assert torch.equal(g, torch.zeros(2, 1))
    assert out.metrics["rescued_frac"] == 0.0


def test_nsr_bernoulli_draws_follow_torch_rand_with_the_generator() -> None:
    # 40 tokens all in the high band: rescued exactly where u < p, u = torch.rand(shape, gen).
    ratios = torch.full((4, 10), 1.35)
    logp = ratios.log()
    p = 0.4
    out, g = _run_logp(
        {**NSR, "rescue_prob": p},
        logp,
        torch.zeros_like(logp),
        torch.ones(4),
        torch.ones(4, 10),
        generator=_gen(123),
    )
    u = torch.rand((4, 10), generator=_gen(123))
    rescued = u < p
    # A rescued token has gradient -A·r/N; a clipped one has none.
    expected = torch.where(rescued, torch.full_like(u, -1.35 / 40), torch.zeros_like(u))
    torch.testing.assert_close(g, expected)
    assert out.metrics["rescued_frac"] == pytest.approx(rescued.float().mean().item())
    assert 0 < rescued.sum() < 40


def test_nsr_is_deterministic_given_a_seeded_generator() -> None:
    logp, old, adv, mask = _random_batch(7, scale=0.3)
    cfg = {**NSR, "rescue_prob": 0.5, "rescue_margin": 0.5}
    a, ga = _run_logp(cfg, logp, old, adv, mask, generator=_gen(11))
    b, gb = _run_logp(cfg, logp, old, adv, mask, generator=_gen(11))
    assert torch.equal(a.loss, b.loss) and torch.equal(ga, gb)
    assert a.metrics == b.metrics
    # Different seeds rescue different tokens (200 band tokens: a tie is astronomically rare).
    ratios = torch.full((1, 200), 1.35)
    runs = [
        _run_logp(
            {**NSR, "rescue_prob": 0.5},
            ratios.log(),
            torch.zeros(1, 200),
            torch.ones(1),
            torch.ones(1, 200),
            generator=_gen(s),
        )[1]
        for s in (1, 2)
    ]
    assert not torch.equal(runs[0], runs[1])


def test_nsr_dual_clip_applies_after_rescue() -> None:
    cfg = {**NSR, "rescue_prob": 1.0, "dual_clip_c": 3.0}
    # Rescued low-band token (r 0.75 < c, untouched by dual clip) and a dual-clipped A<0, r=4.
    out, g = _run(cfg, [[0.75, 4.0]], [[-1.0, -1.0]])
    assert out.loss.item() == _approx((0.75 + 3.0) / 2)
    assert g[0].tolist() == pytest.approx([0.75 / 2, 0.0])
    assert out.metrics["rescued_frac"] == pytest.approx(0.5)
    assert out.metrics["dual_clip_frac"] == pytest.approx(0.5)


def test_nsr_eps_high_inf_has_no_high_band() -> None:
    cfg = {**NSR, "eps_high": math.inf, "rescue_prob": 1.0}
    out, g = _run(cfg, [[50.0]], [[1.0]])
    assert out.loss.item() == _approx(-50.0)
    assert g.item() == _approx(-50.0)
    assert out.metrics["rescued_frac"] == 0.0


# --------------------------------------------------------------------------- clip_cov

# A mean 0, logp mean -2: cov = A·(logp + 2) = [3.0, 0.5, 0.5, 3.0]; r = 1 so the loss is -A.
COV_A = torch.tensor([[2.0, -1.0, 1.0, -2.0]])
COV_LOGP = torch.tensor([[-0.5, -2.5, -1.5, -3.5]])
CLIP_COV = {"kind": "clip_cov", "eps_low": 0.2, "eps_high": 0.2, "cov_lb": 1.0, "cov_ub": 5.0}


def test_clip_cov_zeroes_one_of_the_two_candidates_by_hand() -> None:
    cfg = {**CLIP_COV, "cov_ratio": 0.25}  # k = max(floor(0.25·4), 1) = 1
    out, g = _run_logp(cfg, COV_LOGP, COV_LOGP, COV_A, torch.ones(1, 4), generator=_gen(0))
    zero_grad = (g[0] == 0).nonzero().flatten().tolist()
    assert zero_grad in ([0], [3])
    # Loss (-A summed over the others) / 4: the selected token stays in the denominator.
    expected = 0.5 if zero_grad == [0] else -0.5
    assert out.loss.item() == _approx(expected)
    assert out.metrics["cov_selected_frac"] == pytest.approx(0.25)
    others = [i for i in range(4) if i not in zero_grad]
    assert g[0, others].tolist() == pytest.approx((-COV_A[0, others] / 4).tolist())


@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_clip_cov_takes_all_candidates_when_fewer_than_k(ratio: float) -> None:
    cfg = {**CLIP_COV, "cov_ratio": ratio}  # k = 2 or 4, 2 candidates
    out, g = _run_logp(cfg, COV_LOGP, COV_LOGP, COV_A, torch.ones(1, 4), generator=_gen(0))
    assert out.loss.item() == _approx((0.0 + 1.0 - 1.0 + 0.0) / 4)
    assert g[0].tolist() == pytest.approx([0.0, 0.25, -0.25, 0.0])
    assert out.metrics["cov_selected_frac"] == pytest.approx(0.5)


def test_clip_cov_never_selects_an_already_clipped_token() -> None:
    old = COV_LOGP.clone()
    old[0, 0] -= LN(1.5)  # token 0: A>0, r=1.5 > 1.2, clipped high
    cfg = {**CLIP_COV, "cov_ratio": 0.5}
    out, g = _run_logp(cfg, COV_LOGP, old, COV_A, torch.ones(1, 4), generator=_gen(0))
    assert out.loss.item() == _approx((-2.0 * 1.2 + 1.0 - 1.0 + 0.0) / 4)
    assert g[0].tolist() == pytest.approx([0.0, 0.25, -0.25, 0.0])
    assert out.metrics["cov_selected_frac"] == pytest.approx(0.25)
    assert out.metrics["clip_high_frac"] == pytest.approx(0.25)


@pytest.mark.parametrize("seed", [0, 1])
def test_clip_cov_with_bounds_excluding_every_cov_equals_ppo_clip(seed: int) -> None:
    logp, old, adv, mask = _random_batch(seed)
    cfg = {**CLIP_COV, "cov_ratio": 0.5, "cov_lb": 1e6, "cov_ub": 1e7, "agg": "seq-mean-token-mean"}
    ppo = {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2, "agg": "seq-mean-token-mean"}
    a, ga = _run_logp(cfg, logp, old, adv, mask, generator=_gen(seed))
    b, gb = _run_logp(ppo, logp, old, adv, mask)
    assert torch.equal(a.loss, b.loss) and torch.equal(ga, gb)
    assert a.metrics["cov_selected_frac"] == 0.0


@pytest.mark.parametrize(("ratio", "count"), [(0.29, 29), (0.05, 5), (0.001, 1), (0.999, 99)])
def test_clip_cov_selects_max_floor_ratio_n_1_tokens(ratio: float, count: int) -> None:
    # 100 valid tokens of 2x64, every one a candidate (r = 1, wide bounds, nonzero A).
    g = _gen(3)
    logp = -torch.rand(2, 64, generator=g) * 3
    mask = torch.zeros(2, 64)
    mask[0, :60] = 1
    mask[1, :40] = 1
    adv = torch.tensor([1.0, -1.0])
    cfg = {"kind": "clip_cov", "cov_ratio": ratio, "cov_lb": -1e9, "cov_ub": 1e9}
    out, grad = _run_logp(cfg, logp, logp, adv, mask, generator=_gen(4))
    selected = (grad == 0) & mask.bool()
    assert selected.sum().item() == count
    assert out.metrics["cov_selected_frac"] == pytest.approx(count / 100)


def test_clip_cov_selection_is_uniform_and_seeded() -> None:
    cfg = {**CLIP_COV, "cov_ratio": 0.25}
    picks = []
    for seed in range(100):
        _, g = _run_logp(cfg, COV_LOGP, COV_LOGP, COV_A, torch.ones(1, 4), generator=_gen(seed))
        picks.append(int((g[0] == 0).nonzero()[0]))
    assert set(picks) == {0, 3}
    assert 25 <= picks.count(0) <= 75  # Binomial(100, 0.5): outside is ~1e-6
    _, g1 = _run_logp(cfg, COV_LOGP, COV_LOGP, COV_A, torch.ones(1, 4), generator=_gen(9))
    _, g2 = _run_logp(cfg, COV_LOGP, COV_LOGP, COV_A, torch.ones(1, 4), generator=_gen(9))
    assert torch.equal(g1, g2)


# --------------------------------------------------------------------------- kl_cov

# A mean 0, logp mean -2: cov = A·(logp + 2) = [4.5, 0.5, 0.0, 3.0] (top-1: token 0; top-2: 0, 3)
KL_A = torch.tensor([[3.0, -1.0, 0.0, -2.0]])
KL_LOGP = torch.tensor([[-0.5, -2.5, -1.5, -3.5]])
KL_R = [1.1, 0.5, 1.0, 1.5]  # token 1 (A<0, r=0.5) would be clipped by ppo_clip; kl_cov does not


@pytest.mark.parametrize(
    ("ratio", "top"),
    [(0.25, [0]), (0.5, [0, 3]), (0.1, [0])],  # k = max(floor(ratio·4), 1)
)
def test_kl_cov_penalises_exactly_the_top_k_by_hand(ratio: float, top: list[int]) -> None:
    old = KL_LOGP - torch.tensor([KL_R]).log()
    cfg = {"kind": "kl_cov", "cov_ratio": ratio, "kl_coef": 0.5}
    out, g = _run_logp(cfg, KL_LOGP, old, KL_A, torch.ones(1, 4))
    l1 = [-3.3, 0.5, 0.0, 3.0]  # -A·r, no clipping anywhere
    penalty = [0.5 * abs(LN(KL_R[i])) if i in top else 0.0 for i in range(4)]
    assert out.loss.item() == _approx((sum(l1) + sum(penalty)) / 4)
    # d/dlogp: -A·r, plus kl_coef·sign(logp - old_logp) on the penalised tokens.
    grads = [-3.3, 0.5, 0.0, 3.0]
    for i in top:
        grads[i] += 0.5 * math.copysign(1.0, LN(KL_R[i]))
    assert g[0].tolist() == pytest.approx([x / 4 for x in grads], abs=1e-6)
    assert out.metrics["cov_selected_frac"] == pytest.approx(len(top) / 4)
    assert out.metrics["clip_low_frac"] == 0.0


def test_kl_cov_cov_uses_means_over_valid_tokens_only() -> None:
    # Token 0 is masked (its huge A and logp must not count). Valid: A = [0, 0, -3] (mean -1),
    # logp = [-1, -3, -2] (mean -2): cov = [1·1, 1·(-1), -2·0] = [1, -1, 0] -> top-1 is token 1.
    # (Means over all four positions would make token 3 the top one.)
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    adv = torch.tensor([[9.0, 0.0, 0.0, -3.0]])
    logp = torch.tensor([[5.0, -1.0, -3.0, -2.0]])
    ratios = torch.tensor([[1.2, 1.1, 1.2, 1.5]])
    out, g = _run_logp(
        {"kind": "kl_cov", "cov_ratio": 0.01, "kl_coef": 1.0}, logp, logp - ratios.log(), adv, mask
    )
    # L1 = -A·r = [0, 0, 4.5] on valid tokens; penalty |ln 1.1| on token 1.
    assert out.loss.item() == _approx((4.5 + LN(1.1)) / 3)
    assert g[0].tolist() == pytest.approx([0.0, 1.0 / 3, 0.0, 4.5 / 3], abs=1e-6)
    assert out.metrics["cov_selected_frac"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- gppo


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dual", [None, 1.5])
def test_gppo_value_equals_ppo_clip(seed: int, dual: float | None) -> None:
    logp, old, adv, mask = _random_batch(seed, scale=0.6)
    base = {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": dual}
    a, _ = _run_logp(
        {"kind": "gppo", **base, "beta_low": 0.5, "beta_high": 2.0}, logp, old, adv, mask
    )
    b, _ = _run_logp({"kind": "ppo_clip", **base}, logp, old, adv, mask)
    assert torch.equal(a.loss, b.loss)
    assert a.metrics == b.metrics


def test_gppo_gradient_on_clipped_tokens_is_the_bounded_expression() -> None:
    cfg = {"kind": "gppo", "eps_low": 0.2, "eps_high": 0.28, "beta_low": 2.0, "beta_high": 0.5}
    # clipped high, clipped low, inside
    out, g = _run(cfg, [[1.5, 0.5, 1.1]], [[2.0, -0.5, 2.0]])
    assert out.loss.item() == _approx((-2.0 * 1.28 + 0.5 * 0.8 - 2.2) / 3)
    expected = [
        -0.5 * 1.28 * 2.0,  # -beta_high·(1+eps_high)·A
        -2.0 * 0.8 * -0.5,  # -beta_low·(1-eps_low)·A
        -2.2,  # unclipped: -A·r
    ]
    assert g[0].tolist() == pytest.approx([x / 3 for x in expected], abs=1e-6)


def test_gppo_dual_clip_after_gives_zero_gradient() -> None:
    cfg = {"kind": "gppo", "eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 3.0}
    out, g = _run(cfg, [[4.0, 0.5]], [[-1.0, -1.0]])
    assert out.loss.item() == _approx((3.0 + 0.8) / 2)
    assert g[0].tolist() == pytest.approx([0.0, -1.0 * 0.8 * -1.0 / 2])
    assert g[0, 0].item() == 0.0


def test_gppo_with_unit_betas_passes_the_clip_bound_as_gradient() -> None:
    out, g = _run({"kind": "gppo", "eps_high": 0.2}, [[3.0]], [[1.0]])
    assert out.loss.item() == _approx(-1.2)
    assert g.item() == _approx(-1.2)


# --------------------------------------------------------------------------- gspo


@pytest.mark.parametrize("eps", [(0.2, 0.28), (3e-4, 4e-4)])
def test_gspo_with_constant_log_ratio_equals_token_ratio_case(eps: tuple[float, float]) -> None:
    # Each sequence has one ratio for all its tokens (ragged mask; last row empty).
    seq_r = torch.tensor([1.5, 0.9, 1.1, 0.7, 1.0])
    adv = torch.tensor([1.0, -1.0, 1.0, -2.0, 0.5])
    mask = torch.tensor(
        [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float32
    )
    old = -torch.rand(5, 4, generator=_gen(0))
    logp = old + seq_r.log()[:, None]
    base = {"eps_low": eps[0], "eps_high": eps[1]}
    a, ga = _run_logp({"kind": "gspo", **base}, logp, old, adv, mask)
    b, gb = _run_logp(
        {"kind": "ppo_clip", **base, "agg": "seq-mean-token-mean"}, logp, old, adv, mask
    )
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-6)
    torch.testing.assert_close(ga, gb)
    assert a.metrics == pytest.approx(b.metrics)


def test_gspo_sequence_ratio_by_hand() -> None:
    # Row 0: log r = [0.1, 0.3] -> s = e^0.2, A=+1; row 1: log r = [-0.5, -0.1] -> s = e^-0.3, A=-1.
    ratios = [[math.exp(0.1), math.exp(0.3)], [math.exp(-0.5), math.exp(-0.1)]]
    s0, s1 = math.exp(0.2), math.exp(-0.3)
    out, g = _run({"kind": "gspo", "eps_low": 0.2, "eps_high": 0.3}, ratios, [1.0, -1.0])
    # Row 0 inside (s0 = 1.2214 < 1.3): token loss -s0, gradient -A·s0 per token / 2 tokens / 2 rows
    # Row 1 clipped low (s1 = 0.7408 < 0.8): loss 0.8, gradient 0.
    assert s0 < 1.3 and s1 < 0.8
    assert out.loss.item() == _approx((-s0 + 0.8) / 2)
    assert g.tolist() == [pytest.approx([-s0 / 4, -s0 / 4]), [0.0, 0.0]]
    assert out.metrics["clip_low_frac"] == pytest.approx(0.5)
    assert out.metrics["clip_high_frac"] == 0.0


def test_gspo_clips_high_on_the_sequence_ratio() -> None:
    ratios = [[math.exp(0.1), math.exp(0.3)]]  # s = e^0.2 = 1.22 > 1.15; r_0 = 1.105 is not
    out, g = _run({"kind": "gspo", "eps_low": 0.2, "eps_high": 0.15}, ratios, [1.0])
    assert out.loss.item() == _approx(-1.15)
    assert torch.equal(g, torch.zeros(1, 2))
    assert out.metrics["clip_high_frac"] == 1.0


# --------------------------------------------------------------------------- micro-batching

# Settings under which every mechanism acts on _random_batch(scale=0.6): clipping, dual clip,
# rescue draws, covariance selection (wide bounds, large ratio), GPPO's clipped gradient.
ACTIVE = {
    "ppo_clip": {"eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": 1.5},
    "nsr": {"rescue_prob": 0.5, "rescue_margin": 0.5},
    "clip_cov": {"cov_ratio": 0.2, "cov_lb": -100.0, "cov_ub": 100.0},
    "kl_cov": {"cov_ratio": 0.2, "kl_coef": 0.5},
    "gppo": {"beta_low": 0.5, "beta_high": 2.0},
    "gspo": {"eps_low": 0.05, "eps_high": 0.05},
}
PARTS = [slice(0, 2), slice(2, 5), slice(5, 6)]  # uneven micro-batches of a 6-row mini-batch


MICRO_CASES = [(k, a) for k in ALL_KINDS if k != "gspo" for a in AGGREGATIONS] + [
    ("gspo", "seq-mean-token-mean")  # gspo always aggregates seq-mean-token-mean
]


@pytest.mark.parametrize(("kind", "agg"), MICRO_CASES)
def test_micro_batches_sum_to_the_unsplit_loss_gradient_and_metrics(kind: str, agg: str) -> None:
    """policy_loss over the parts of a mini-batch, with the mini-batch's plan, adds up to the
    unsplit call: loss, d loss/d logp and every metric (gspo ignores agg)."""
    cfg = {"kind": kind, **ACTIVE[kind], **({} if kind == "gspo" else {"agg": agg})}
    logp, old, adv, mask = _random_batch(5, b=6, t=9, scale=0.6)
    full, g_full = _run_logp(cfg, logp, old, adv, mask, norm_len=12, generator=_gen(3))

    leaf = logp.detach().clone().requires_grad_(True)
    plan = plan_mini_batch(old, adv, mask, cfg, logp=leaf.detach(), norm_len=12, generator=_gen(3))
    loss, metrics = 0.0, dict.fromkeys(METRIC_KEYS, 0.0)
    for rows in PARTS:
        out = policy_loss(
            leaf[rows], old[rows], adv[rows], mask[rows], cfg, norm_len=12, **plan.part(rows)
        )
        out.loss.backward()
        loss += out.loss.item()
        for key in METRIC_KEYS:
            metrics[key] += out.metrics[key]
    assert loss == pytest.approx(full.loss.item(), rel=1e-6, abs=1e-7)
    torch.testing.assert_close(leaf.grad, g_full, atol=1e-7, rtol=1e-6)
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(full.metrics[key], rel=1e-6, abs=1e-9), key
    # The settings make the mechanism of each kind act (the equality is not vacuous).
    acting = {
        "ppo_clip": "dual_clip_frac",
        "nsr": "rescued_frac",
        "clip_cov": "cov_selected_frac",
        "kl_cov": "cov_selected_frac",
        "gppo": "clip_low_frac",
        "gspo": "clip_low_frac",
    }[kind]
    assert full.metrics[acting] > 0.0


def test_plan_of_a_covariance_kind_needs_the_current_logp() -> None:
    logp, old, adv, mask = _random_batch(0)
    assert needs_current_logp({"kind": "clip_cov"}) and needs_current_logp({"kind": "kl_cov"})
    assert not any(needs_current_logp({"kind": k}) for k in ("ppo_clip", "nsr", "gppo", "gspo"))
    with pytest.raises(ValueError, match="logp"):
        plan_mini_batch(old, adv, mask, {"kind": "kl_cov"})
    # A kind that draws advances the generator exactly as the unsplit call does.
    g1, g2 = _gen(7), _gen(7)
    plan_mini_batch(old, adv, mask, {"kind": "nsr"}, generator=g1)
    policy_loss(logp, old, adv, mask, {"kind": "nsr"}, generator=g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_totals_replace_the_denominators_by_hand() -> None:
    per_token = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert LossTotals.of(mask) == LossTotals(n_tokens=3, n_seqs=2, n_rows=2)
    mini = LossTotals(n_tokens=10, n_seqs=5, n_rows=8)  # the whole mini-batch's
    assert aggregate(per_token, mask, "token-mean", totals=mini).item() == pytest.approx(6 / 10)
    assert aggregate(per_token, mask, "seq-mean-token-mean", totals=mini).item() == pytest.approx(
        (1.5 + 3.0) / 5
    )
    assert aggregate(per_token, mask, "seq-mean-token-sum", totals=mini).item() == pytest.approx(
        6 / 5
    )
    norm = aggregate(per_token, mask, "seq-mean-token-sum-norm", 4, totals=mini).item()
    assert norm == pytest.approx(6 / (8 * 4))
