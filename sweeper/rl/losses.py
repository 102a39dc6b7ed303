"""Policy losses for the RLVR job: one function per loss kind, behind a verl-style registry.

``policy_loss`` is the entry point (DESIGN §3.1)::

    out = policy_loss(logp, old_logp, advantages, mask,
                      {"kind": "ppo_clip", "eps_low": 0.2, "eps_high": 0.28})
    out.loss.backward()          # scalar tensor to minimise
    out.metrics["clip_high_frac"]

Each kind is a function ``fn(batch: LossBatch, params) -> LossOutput`` registered with
``@register("<kind>")``; its params model (bounds, defaults, which fields it reads) lives beside
the others in the torch-free ``sweeper.config.loss``. The variants share small helpers (ratio,
L1/L2 surrogates, clip masks, dual clip, covariance, aggregation) instead of copying code.

Every kind is two stages: the kind's own per-token loss [B, T], then one shared aggregation stage
(:func:`aggregate`, with explicit normalisers) and the metrics (:func:`_output`).

Micro-batching (gradient accumulation): a mini-batch split into micro-batches gives exactly the
mini-batch's update when every micro-batch's call knows the whole mini-batch. Build a
:class:`MiniBatchPlan` once per mini-batch with :func:`plan_mini_batch` (the normalisers, the
random draws, and the Clip-Cov / KL-Cov selection, which needs the whole mini-batch's detached
current log-probs: :func:`needs_current_logp`), then call ``policy_loss(..., **plan.part(rows))``
per micro-batch: its loss and metrics are then that micro-batch's *contribution*, and the sums
over the micro-batches equal the mini-batch's loss, gradient and metrics::

    plan = plan_mini_batch(old_logp, adv, mask, cfg, logp=current_logp_detached, generator=g)
    for rows in micro_batches:                      # slices of the mini-batch
        out = policy_loss(logp_of(rows), old_logp[rows], adv[rows], mask[rows], cfg,
                          **plan.part(rows))
        out.loss.backward()                         # gradients accumulate to the full step

Notation (DESIGN §3.1): r = exp(clamp(logp - old_logp, -20, 20)), A the advantage,
L1 = -A·r, L2 = -A·clip(r, 1-eps_low, 1+eps_high). Every kind returns the same metric keys
(``METRIC_KEYS``) so the job's rows have stable columns; fractions are over valid tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor

from sweeper.config.loss import (
    AGGREGATIONS,
    LOSS_PARAMS,
    ClipCovLoss,
    GPPOLoss,
    GSPOLoss,
    KLCovLoss,
    LossConfig,
    NSRLoss,
    PPOClipLoss,
    parse_loss_config,
)
from sweeper.config.messages import describe_validation_error
from sweeper.errors import InputError

__all__ = [
    "METRIC_KEYS",
    "POLICY_LOSSES",
    "LossBatch",
    "LossConfig",
    "LossOutput",
    "LossTotals",
    "MiniBatchPlan",
    "aggregate",
    "get_policy_loss",
    "needs_current_logp",
    "plan_mini_batch",
    "policy_loss",
    "register",
]

LOG_RATIO_CLAMP = 20.0
"""|logp - old_logp| is clamped to this before exp, so r stays finite (e^20 ~ 4.9e8)."""

METRIC_KEYS: tuple[str, ...] = (
    "clip_low_frac",
    "clip_high_frac",
    "dual_clip_frac",
    "rescued_frac",
    "cov_selected_frac",
    "approx_kl",
)
"""The metric keys every kind returns (0.0 where a kind has no such thing)."""


@dataclass(frozen=True)
class LossOutput:
    """What a policy loss returns.

    Attributes:
        loss: scalar tensor to minimise (differentiable w.r.t. ``logp``).
        metrics: ``METRIC_KEYS`` -> float; token fractions over valid tokens, and ``approx_kl``
            = mean over valid tokens of ``old_logp - logp``.
    """

    loss: Tensor
    metrics: dict[str, float]


@dataclass(frozen=True)
class LossTotals:
    """The normalisers of the (mini-)batch a loss call belongs to.

    Without micro-batching they are the call's own batch's; with it, the whole mini-batch's, so
    that each micro-batch's loss is its share of the mini-batch's (DESIGN §3.1 aggregation).

    Attributes:
        n_tokens: valid tokens (``token-mean``, and every metric fraction).
        n_seqs: sequences with at least one valid token (``seq-mean-token-mean``,
            ``seq-mean-token-sum``).
        n_rows: all rows, empty ones included (``seq-mean-token-sum-norm`` divides by
            ``n_rows * norm_len``).
    """

    n_tokens: int
    n_seqs: int
    n_rows: int

    @classmethod
    def of(cls, mask: Tensor) -> LossTotals:
        """The totals of ``mask`` [B, T] (one host sync)."""
        valid = mask != 0
        n_tokens, n_seqs = torch.stack([valid.sum(), valid.any(-1).sum()]).tolist()
        return cls(int(n_tokens), int(n_seqs), int(mask.shape[0]))


@dataclass(frozen=True)
class LossBatch:
    """The inputs of one loss call, validated, upcast to float32 and sanitised.

    Masked positions hold 0 in ``logp``/``old_logp``/``advantages`` (so padding that carries
    -inf or NaN cannot leak into the loss or its gradient) and thus have ratio exactly 1.

    Attributes:
        logp: [B, T] float32, differentiable: log-probs of the sampled tokens, current policy.
        old_logp: [B, T] float32, detached: the same under the rollout policy.
        advantages: [B, T] float32, detached.
        mask: [B, T] bool, True on response tokens.
        norm_len: divisor of ``seq-mean-token-sum-norm``.
        generator: torch RNG for stochastic kinds (``nsr``, ``clip_cov``), or None (global RNG).
        totals: the normalisers (this batch's own, or its mini-batch's when micro-batching).
        uniforms: [B, T] float32 draws to use instead of drawing from ``generator`` (a
            micro-batch's slice of its mini-batch's draws), or None.
        cov_selected: [B, T] bool Clip-Cov / KL-Cov selection made on the whole mini-batch, or
            None (select here, on this batch).
    """

    logp: Tensor
    old_logp: Tensor
    advantages: Tensor
    mask: Tensor
    norm_len: int
    generator: torch.Generator | None
    totals: LossTotals
    uniforms: Tensor | None = None
    cov_selected: Tensor | None = None

    @classmethod
    def build(
        cls,
        logp: Tensor,
        old_logp: Tensor,
        advantages: Tensor,
        mask: Tensor,
        norm_len: int | None = None,
        generator: torch.Generator | None = None,
        *,
        totals: LossTotals | None = None,
        uniforms: Tensor | None = None,
        cov_selected: Tensor | None = None,
    ) -> LossBatch:
        """Check shapes and build a batch; ``advantages`` may be [B] (broadcast over tokens).
        ``totals`` defaults to this batch's own."""
        if logp.dim() != 2:
            raise ValueError(f"logp must be [B, T], got shape {tuple(logp.shape)}")
        shape = logp.shape
        for name, t in (
            ("old_logp", old_logp),
            ("mask", mask),
            ("uniforms", uniforms),
            ("cov_selected", cov_selected),
        ):
            if t is not None and t.shape != shape:
                raise ValueError(f"{name} shape {tuple(t.shape)} != logp shape {tuple(shape)}")
        if advantages.dim() == 1 and advantages.shape[0] == shape[0]:
            advantages = advantages[:, None].expand(shape)
        if advantages.shape != shape:
            raise ValueError(
                f"advantages shape {tuple(advantages.shape)} must be [B, T] or [B] "
                f"for logp shape {tuple(shape)}"
            )
        if norm_len is None:
            norm_len = shape[1]
        if norm_len <= 0:
            raise ValueError(f"norm_len must be > 0, got {norm_len}")
        valid = mask != 0
        zero = torch.zeros((), dtype=torch.float32, device=logp.device)
        # Float32 math even for bf16 policies: ratios near the clip bounds need the precision.
        return cls(
            logp=torch.where(valid, logp.float(), zero),
            old_logp=torch.where(valid, old_logp.detach().float(), zero),
            advantages=torch.where(valid, advantages.detach().float(), zero),
            mask=valid,
            norm_len=int(norm_len),
            generator=generator,
            totals=LossTotals.of(valid) if totals is None else totals,
            uniforms=None if uniforms is None else uniforms.float(),
            cov_selected=None if cov_selected is None else cov_selected != 0,
        )

    def draw_uniforms(self) -> Tensor:
        """[B, T] U(0, 1) draws for a stochastic kind: the given ``uniforms``, else exactly one
        ``torch.rand([B, T], generator)`` (so the RNG stream advances by B·T whatever the data)."""
        if self.uniforms is not None:
            return self.uniforms
        return torch.rand(self.mask.shape, generator=self.generator, device=self.mask.device)


# --------------------------------------------------------------------------- registry

LossFn = Callable[[LossBatch, Any], LossOutput]
SelectionFn = Callable[[LossBatch, Any], Tensor]
POLICY_LOSSES: dict[str, LossFn] = {}
"""Loss kind -> its function. Filled by ``@register``; keys equal ``LOSS_PARAMS``'s."""

_DRAWS_UNIFORMS: set[str] = set()  # kinds calling LossBatch.draw_uniforms once per call
_SELECTIONS: dict[str, SelectionFn] = {}  # kinds selecting tokens over the whole batch


def register(
    kind: str, *, draws_uniforms: bool = False, selection: SelectionFn | None = None
) -> Callable[[LossFn], LossFn]:
    """Decorator registering ``fn`` as the implementation of loss ``kind``.

    ``draws_uniforms``: the kind draws one [B, T] uniform tensor per call
    (:meth:`LossBatch.draw_uniforms`); ``selection``: the kind selects tokens over the whole
    batch (``fn(batch, params) -> [B, T] bool``) and uses ``batch.cov_selected`` when given. Both
    let :func:`plan_mini_batch` make a micro-batched update exact. Registering a kind twice is
    an error (a silent overwrite would hide a bug).
    """

    def decorator(fn: LossFn) -> LossFn:
        if kind in POLICY_LOSSES:
            raise ValueError(
                f"loss kind {kind!r} is already registered (by {POLICY_LOSSES[kind].__name__})"
            )
        POLICY_LOSSES[kind] = fn
        if draws_uniforms:
            _DRAWS_UNIFORMS.add(kind)
        if selection is not None:
            _SELECTIONS[kind] = selection
        return fn

    return decorator


def get_policy_loss(kind: str) -> LossFn:
    """The function registered for ``kind``; an unknown kind raises ``InputError`` listing the
    valid names."""
    try:
        return POLICY_LOSSES[kind]
    except KeyError:
        raise InputError(
            f"loss.kind: unknown loss kind {kind!r}; valid kinds: {', '.join(sorted(POLICY_LOSSES))}"
        ) from None


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    config: dict[str, Any] | Any,
    norm_len: int | None = None,
    generator: torch.Generator | None = None,
    *,
    totals: LossTotals | None = None,
    uniforms: Tensor | None = None,
    cov_selected: Tensor | None = None,
) -> LossOutput:
    """The configured policy loss of one (mini-)batch (DESIGN §3.1).

    The keyword-only arguments are for micro-batching (module docstring): pass
    ``**plan.part(rows)`` of a :class:`MiniBatchPlan`; without them the call is the documented
    one and normalises over its own batch.

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (differentiable).
        old_logp: [B, T] the same under the rollout policy (treated as a constant).
        advantages: [B, T] (sequence advantage broadcast over tokens) or [B].
        mask: [B, T] 1/True on response tokens (bool, int or float).
        config: the recipe's ``loss`` block: a dict, or a validated model from
            ``sweeper.config.loss`` (``LossConfig``).
        norm_len: divisor of ``seq-mean-token-sum-norm`` (default T; the job passes
            ``max_new_tokens``).
        generator: torch RNG for the stochastic kinds (``nsr``, ``clip_cov``); it must live on
            the tokens' device. None uses torch's global RNG.
        totals: normalisers of the whole mini-batch (default: this batch's own). With them the
            loss and each metric are this batch's contribution (they sum over micro-batches).
        uniforms: [B, T] draws replacing the kind's own ``torch.rand`` (``nsr``).
        cov_selected: [B, T] bool Clip-Cov / KL-Cov selection made on the whole mini-batch.

    Returns:
        ``LossOutput(loss, metrics)`` with ``metrics`` keyed by ``METRIC_KEYS``.

    Raises:
        InputError: unknown kind, a key the kind does not read, or an out-of-range value (the
            message names the field).
        ValueError: tensors of mismatched shapes.
    """
    params = _parse(config)
    batch = LossBatch.build(
        logp,
        old_logp,
        advantages,
        mask,
        norm_len,
        generator,
        totals=totals,
        uniforms=uniforms,
        cov_selected=cov_selected,
    )
    return get_policy_loss(params.kind)(batch, params)


# --------------------------------------------------------------------------- micro-batching


@dataclass(frozen=True)
class MiniBatchPlan:
    """What every micro-batch of one mini-batch must share for an exact accumulated update.

    Attributes:
        totals: the mini-batch's normalisers.
        uniforms: [B, T] the mini-batch's random draws (kinds that draw), else None.
        cov_selected: [B, T] bool the Clip-Cov / KL-Cov selection over the whole mini-batch
            (kinds that select), else None.
    """

    totals: LossTotals
    uniforms: Tensor | None = None
    cov_selected: Tensor | None = None

    def part(self, rows: slice | Tensor) -> dict[str, Any]:
        """``policy_loss`` keyword arguments for the micro-batch made of mini-batch ``rows``."""
        return {
            "totals": self.totals,
            "uniforms": None if self.uniforms is None else self.uniforms[rows],
            "cov_selected": None if self.cov_selected is None else self.cov_selected[rows],
        }


def needs_current_logp(config: dict[str, Any] | Any) -> bool:
    """Whether :func:`plan_mini_batch` needs the mini-batch's current log-probs for ``config``
    (the covariance kinds select tokens by cov, which uses the current, detached logp)."""
    return _parse(config).kind in _SELECTIONS


def plan_mini_batch(
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    config: dict[str, Any] | Any,
    *,
    logp: Tensor | None = None,
    norm_len: int | None = None,
    generator: torch.Generator | None = None,
) -> MiniBatchPlan:
    """The :class:`MiniBatchPlan` of one mini-batch (all tensors [B, T] of the whole mini-batch).

    Draws the kind's uniforms from ``generator`` exactly as an unsplit call would, and for the
    covariance kinds makes the selection from ``logp`` (the current policy's log-probs, detached;
    required when :func:`needs_current_logp`). A call per micro-batch with ``plan.part(rows)``
    then sums to the unsplit call's loss, gradient and metrics.
    """
    params = _parse(config)
    selection = _SELECTIONS.get(params.kind)
    if selection is not None and logp is None:
        raise ValueError(f"loss kind {params.kind!r} selects by covariance: pass logp")
    current = old_logp if logp is None else logp.detach()
    batch = LossBatch.build(current, old_logp, advantages, mask, norm_len, generator)
    uniforms = batch.draw_uniforms() if params.kind in _DRAWS_UNIFORMS else None
    if selection is None:
        return MiniBatchPlan(batch.totals, uniforms=uniforms)
    batch = LossBatch.build(
        current, old_logp, advantages, mask, norm_len, generator, uniforms=uniforms
    )
    return MiniBatchPlan(batch.totals, cov_selected=selection(batch, params))


def _parse(config: Any) -> Any:
    try:
        return parse_loss_config(config)
    except ValidationError as err:
        raise InputError(describe_validation_error(err, "loss")) from None
    except ValueError as err:  # unknown kind: the message already lists the valid ones
        raise InputError(f"loss.kind: {err}") from None


# --------------------------------------------------------------------------- shared pieces


def _log_ratio(batch: LossBatch) -> Tensor:
    """[B, T] clamped log r (0 on masked positions)."""
    return (batch.logp - batch.old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def _ratio(batch: LossBatch) -> Tensor:
    """[B, T] r = exp(clamp(logp - old_logp, -20, 20))."""
    return torch.exp(_log_ratio(batch))


def _clip_masks(
    ratio: Tensor, adv: Tensor, mask: Tensor, eps_low: float, eps_high: float
) -> tuple[Tensor, Tensor]:
    """[B, T] bool masks of the tokens the clip acts on (zero gradient under plain clipping):
    low = A<0 and r<1-eps_low, high = A>0 and r>1+eps_high (never when eps_high is inf)."""
    low = mask & (adv < 0) & (ratio < 1.0 - eps_low)
    high = mask & (adv > 0) & (ratio > 1.0 + eps_high)
    return low, high


def _surrogates(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float
) -> tuple[Tensor, Tensor]:
    """[B, T] L1 = -A·r and L2 = -A·clip(r, 1-eps_low, 1+eps_high)."""
    l1 = -adv * ratio
    l2 = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    return l1, l2


def _clipped_surrogate(
    ratio: Tensor, batch: LossBatch, eps_low: float, eps_high: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """PPO's max(L1, L2) per token, plus L1 and the low/high clip masks."""
    l1, l2 = _surrogates(ratio, batch.advantages, eps_low, eps_high)
    low, high = _clip_masks(ratio, batch.advantages, batch.mask, eps_low, eps_high)
    return torch.maximum(l1, l2), l1, low, high


def _dual_clip(
    per_token: Tensor, ratio: Tensor, batch: LossBatch, c: float | None
) -> tuple[Tensor, Tensor | None]:
    """Dual clip (Ye et al. 2019, arXiv 1912.09729): for A<0, min(loss, -A·c).

    Applied as a ``where`` on A<0 and r>c; there the loss is the constant -A·c (zero gradient).
    For A<0 and r<=c the per-token loss of every kind using this is <= -A·c already, so the
    ``where`` equals ``min`` in value. Returns the new loss and the mask (None when off).
    """
    if c is None:
        return per_token, None
    adv = batch.advantages
    dual = batch.mask & (adv < 0) & (ratio > c)
    return torch.where(dual, -adv * c, per_token), dual


def _token_cov(batch: LossBatch) -> Tensor:
    """[B, T] detached cov_i = (A_i - mean A)·(logp_i - mean logp), means over valid tokens
    (Clip-Cov / KL-Cov, arXiv 2505.22617). Masked positions hold NaN (never selected)."""
    with torch.no_grad():
        m = batch.mask.float()
        n = m.sum().clamp(min=1.0)
        adv, logp = batch.advantages, batch.logp.detach()
        cov = (adv - (adv * m).sum() / n) * (logp - (logp * m).sum() / n)
        return torch.where(batch.mask, cov, torch.full_like(cov, math.nan))


def _select_count(ratio: float, n: int) -> int:
    """k = max(floor(ratio·N), 1) for N > 0, else 0.

    The 1e-9 guard keeps products such as 0.29·100 = 28.999999999999996 at their exact value.
    """
    return max(math.floor(ratio * n + 1e-9), 1) if n > 0 else 0


def _random_subset(candidates: Tensor, k: int, scores: Tensor) -> Tensor:
    """[B, T] bool: k of the True entries of ``candidates`` chosen uniformly at random (all of
    them when there are fewer than k): those with the k smallest ``scores`` [B, T] (uniform
    draws, one per position, so the RNG stream does not depend on the data)."""
    if k == 0 or candidates.numel() == 0:
        return torch.zeros_like(candidates)
    # The k smallest scores among candidates; non-candidates sort last and are masked out after.
    scores = torch.where(candidates, scores, torch.full_like(scores, math.inf))
    chosen = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    chosen[torch.topk(scores.flatten(), min(k, scores.numel()), largest=False).indices] = True
    return chosen.view_as(candidates) & candidates


def _top_k(values: Tensor, mask: Tensor, k: int) -> Tensor:
    """[B, T] bool: the k largest ``values`` among ``mask``-ed entries."""
    chosen = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    if k > 0:
        flat = torch.where(mask, values, torch.full_like(values, -math.inf)).flatten()
        chosen[torch.topk(flat, min(k, flat.numel())).indices] = True
    return chosen.view_as(mask) & mask


# Each aggregator: (masked per-token loss [B, T], mask [B, T] bool, norm_len, totals) -> scalar.
# The numerator is this batch's; the denominator is the totals' (the mini-batch's when
# micro-batching), so micro-batch losses add up to the mini-batch's.


def _agg_token_mean(loss: Tensor, mask: Tensor, norm_len: int, totals: LossTotals) -> Tensor:
    return loss.sum() / max(totals.n_tokens, 1)


def _agg_seq_mean_token_mean(
    loss: Tensor, mask: Tensor, norm_len: int, totals: LossTotals
) -> Tensor:
    per_seq = loss.sum(-1) / mask.sum(-1).clamp(min=1)  # a sequence's own length: row-local
    return per_seq.sum() / max(totals.n_seqs, 1)


def _agg_seq_mean_token_sum(
    loss: Tensor, mask: Tensor, norm_len: int, totals: LossTotals
) -> Tensor:
    return loss.sum() / max(totals.n_seqs, 1)


def _agg_seq_mean_token_sum_norm(
    loss: Tensor, mask: Tensor, norm_len: int, totals: LossTotals
) -> Tensor:
    # Dr. GRPO (arXiv 2503.20783): a constant normaliser B·norm_len, independent of the sampled
    # lengths, so an all-masked row counts as a sequence of length 0.
    return loss.sum() / (norm_len * max(totals.n_rows, 1))


_AGGREGATORS: dict[str, Callable[[Tensor, Tensor, int, LossTotals], Tensor]] = {
    "token-mean": _agg_token_mean,
    "seq-mean-token-mean": _agg_seq_mean_token_mean,
    "seq-mean-token-sum": _agg_seq_mean_token_sum,
    "seq-mean-token-sum-norm": _agg_seq_mean_token_sum_norm,
}


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    agg: str,
    norm_len: int | None = None,
    totals: LossTotals | None = None,
) -> Tensor:
    """Reduce a [B, T] per-token loss to a scalar over ``mask`` (bool [B, T]).

    ``token-mean``: sum(L·M)/sum(M). ``seq-mean-token-mean``: per-sequence token mean, then mean
    over non-empty sequences. ``seq-mean-token-sum``: per-sequence token sum, mean over non-empty
    sequences. ``seq-mean-token-sum-norm``: per-sequence token sum / ``norm_len`` (default T),
    mean over all B sequences. An all-masked batch gives 0 (still differentiable).

    ``totals`` replaces the denominators (sum(M), the non-empty sequences, B) by those of a whole
    mini-batch, so a micro-batch's value is its share (default: ``mask``'s own).
    """
    try:
        reduce = _AGGREGATORS[agg]
    except KeyError:
        raise InputError(
            f"loss.agg: unknown aggregation {agg!r}; valid: {', '.join(AGGREGATIONS)}"
        ) from None
    mask = mask != 0
    loss = torch.where(mask, per_token, torch.zeros_like(per_token))
    totals = LossTotals.of(mask) if totals is None else totals
    return reduce(loss, mask, per_token.shape[-1] if norm_len is None else norm_len, totals)


def _output(
    batch: LossBatch,
    per_token: Tensor,
    agg: str,
    *,
    clip_low: Tensor | None = None,
    clip_high: Tensor | None = None,
    dual_clip: Tensor | None = None,
    rescued: Tensor | None = None,
    cov_selected: Tensor | None = None,
) -> LossOutput:
    """Stage 2 of every kind: aggregate its per-token loss [B, T] (stage 1) with the batch's
    normalisers, and build the metrics (the same keys for every kind; None -> 0.0), fractions
    over ``batch.totals.n_tokens``."""
    loss = aggregate(per_token, batch.mask, agg, batch.norm_len, batch.totals)
    with torch.no_grad():
        zero = torch.zeros((), device=per_token.device)
        counts = [
            zero if m is None else (m & batch.mask).sum().float()
            for m in (clip_low, clip_high, dual_clip, rescued, cov_selected)
        ]
        kl_sum = (batch.old_logp - batch.logp.detach()).sum()  # masked entries are 0
        sums = torch.stack([*counts, kl_sum]).tolist()  # one sync
    n = batch.totals.n_tokens
    values = [s / n if n > 0 else 0.0 for s in sums]  # divide in float64 on the host
    return LossOutput(loss=loss, metrics=dict(zip(METRIC_KEYS, values, strict=True)))


# --------------------------------------------------------------------------- the variants


@register("ppo_clip")
def ppo_clip_loss(batch: LossBatch, cfg: PPOClipLoss) -> LossOutput:
    """PPO clipped surrogate with asymmetric bounds: max(L1, L2), then dual clip if set.

    Papers: PPO, Schulman et al. 2017 (arXiv 1707.06347); GRPO (eps 0.2/0.2, arXiv 2402.03300)
    and DAPO clip-higher (eps_low 0.2, eps_high 0.28, arXiv 2503.14476) are settings of this;
    dual clip, Ye et al. 2019 (arXiv 1912.09729).
    """
    ratio = _ratio(batch)
    per_token, _, low, high = _clipped_surrogate(ratio, batch, cfg.eps_low, cfg.eps_high)
    per_token, dual = _dual_clip(per_token, ratio, batch, cfg.dual_clip_c)
    return _output(batch, per_token, cfg.agg, clip_low=low, clip_high=high, dual_clip=dual)


@register("nsr", draws_uniforms=True)
def nsr_loss(batch: LossBatch, cfg: NSRLoss) -> LossOutput:
    """Near-boundary Stochastic Rescue (arXiv 2605.22703; the paper has no public code, this is
    sweeper's documented reading).

    As ``ppo_clip``, but a token just outside the active bound -- A>0 and
    1+eps_high < r <= (1+eps_high)(1+m), or A<0 and (1-eps_low)(1-m) <= r < 1-eps_low, with
    m = ``rescue_margin`` and only the sides named by ``rescue_sides`` -- is rescued with
    probability ``rescue_prob`` (independent Bernoulli per token, ``torch.rand`` with
    ``generator``) and then uses L1 (unclipped). Dual clip, if set, is applied after the rescue;
    it cannot bind on a rescued token (a rescued A<0 token has r < 1-eps_low <= 1 < c).
    ``clip_*_frac`` count tokens beyond the bound whether rescued or not; ``rescued_frac`` counts
    the rescued ones.
    """
    ratio = _ratio(batch)
    per_token, l1, low, high = _clipped_surrogate(ratio, batch, cfg.eps_low, cfg.eps_high)
    m = cfg.rescue_margin
    band = torch.zeros_like(batch.mask)
    if cfg.rescue_sides in ("both", "high"):
        band = band | (high & (ratio <= (1.0 + cfg.eps_high) * (1.0 + m)))
    if cfg.rescue_sides in ("both", "low"):
        band = band | (low & (ratio >= (1.0 - cfg.eps_low) * (1.0 - m)))
    # Draw for every position so the RNG stream does not depend on the data.
    rescued = band & (batch.draw_uniforms() < cfg.rescue_prob)
    per_token = torch.where(rescued, l1, per_token)
    per_token, dual = _dual_clip(per_token, ratio, batch, cfg.dual_clip_c)
    return _output(
        batch,
        per_token,
        cfg.agg,
        clip_low=low,
        clip_high=high,
        dual_clip=dual,
        rescued=rescued,
    )


def _clip_cov_selection(batch: LossBatch, cfg: ClipCovLoss) -> Tensor:
    """[B, T] bool: Clip-Cov's random pick among unclipped tokens with cov_lb < cov < cov_ub."""
    with torch.no_grad():
        ratio = _ratio(batch)
        low, high = _clip_masks(ratio, batch.advantages, batch.mask, cfg.eps_low, cfg.eps_high)
        cov = _token_cov(batch)
        candidates = batch.mask & ~(low | high) & (cov > cfg.cov_lb) & (cov < cfg.cov_ub)
        k = _select_count(cfg.cov_ratio, batch.totals.n_tokens)
        return _random_subset(candidates, k, batch.draw_uniforms())


@register("clip_cov", draws_uniforms=True, selection=_clip_cov_selection)
def clip_cov_loss(batch: LossBatch, cfg: ClipCovLoss) -> LossOutput:
    """Clip-Cov, Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs" (arXiv
    2505.22617).

    max(L1, L2) (no dual clip). Among valid tokens not already clipped with
    cov_lb < cov < cov_ub, max(floor(cov_ratio·N), 1) (N = valid tokens; all candidates if fewer)
    are chosen uniformly at random and their loss (and gradient) set to 0; they stay in the
    aggregation's denominator.
    """
    ratio = _ratio(batch)
    per_token, _, low, high = _clipped_surrogate(ratio, batch, cfg.eps_low, cfg.eps_high)
    selected = batch.cov_selected
    if selected is None:
        selected = _clip_cov_selection(batch, cfg)
    per_token = torch.where(selected, torch.zeros_like(per_token), per_token)
    return _output(batch, per_token, cfg.agg, clip_low=low, clip_high=high, cov_selected=selected)


def _kl_cov_selection(batch: LossBatch, cfg: KLCovLoss) -> Tensor:
    """[B, T] bool: KL-Cov's top-k valid tokens by cov, k = max(floor(cov_ratio·N), 1)."""
    k = _select_count(cfg.cov_ratio, batch.totals.n_tokens)
    return _top_k(_token_cov(batch), batch.mask, k)


@register("kl_cov", selection=_kl_cov_selection)
def kl_cov_loss(batch: LossBatch, cfg: KLCovLoss) -> LossOutput:
    """KL-Cov, Cui et al. 2025 (arXiv 2505.22617).

    L1 on every token (no clipping) plus kl_coef·|logp - old_logp| on the top-k valid tokens by
    cov, k = max(floor(cov_ratio·N), 1). No clip metrics (the kind does not clip).
    """
    ratio = _ratio(batch)
    l1 = -batch.advantages * ratio
    top = batch.cov_selected
    if top is None:
        top = _kl_cov_selection(batch, cfg)
    penalty = cfg.kl_coef * (batch.logp - batch.old_logp).abs()
    per_token = l1 + torch.where(top, penalty, torch.zeros_like(penalty))
    return _output(batch, per_token, cfg.agg, cov_selected=top)


@register("gppo")
def gppo_loss(batch: LossBatch, cfg: GPPOLoss) -> LossOutput:
    """GPPO, "Gradient-Preserving Clipping Policy Optimization" (Klear-Reasoner, arXiv
    2508.07629).

    Forward value equal to ``ppo_clip``; clipped tokens keep a bounded gradient, that of
    -beta_high·(1+eps_high)·(r/sg(r))·A (A>0, r>1+eps_high) or -beta_low·(1-eps_low)·(r/sg(r))·A
    (A<0, r<1-eps_low), i.e. d/dlogp = -beta·bound·A. Implemented as
    max(L1, L2) + (-A·coef)·(r/sg(r) - 1): r/sg(r) is exactly 1 in IEEE arithmetic, so the
    added term is 0 in value and carries only the gradient. Then dual clip if set.
    """
    ratio = _ratio(batch)
    per_token, _, low, high = _clipped_surrogate(ratio, batch, cfg.eps_low, cfg.eps_high)
    # With eps_high = inf nothing is clipped high; avoid 0·inf = NaN in the coefficient.
    high_coef = cfg.beta_high * (1.0 + cfg.eps_high) if math.isfinite(cfg.eps_high) else 0.0
    low_coef = cfg.beta_low * (1.0 - cfg.eps_low)
    coef = torch.where(
        high,
        torch.full_like(ratio, high_coef),
        torch.where(low, torch.full_like(ratio, low_coef), torch.zeros_like(ratio)),
    )
    per_token = per_token + (-batch.advantages * coef) * (ratio / ratio.detach() - 1.0)
    per_token, dual = _dual_clip(per_token, ratio, batch, cfg.dual_clip_c)
    return _output(batch, per_token, cfg.agg, clip_low=low, clip_high=high, dual_clip=dual)


@register("gspo")
def gspo_loss(batch: LossBatch, cfg: GSPOLoss) -> LossOutput:
    """GSPO, "Group Sequence Policy Optimization", Zheng et al. 2025 (arXiv 2507.18071).

    Sequence ratio s_i = exp(mean_t(log r_t)) over the sequence's valid tokens (log r clamped to
    ±20 as everywhere), in token form exp(logp - sg(logp) + sg(log s_i)) so each token's gradient
    is s_i·∇logp_t; clipped like L2 with s for r; always aggregated ``seq-mean-token-mean``.
    Clip fractions count valid tokens whose sequence is clipped.
    """
    log_ratio = _log_ratio(batch).detach()
    lens = batch.mask.sum(-1).clamp(min=1)
    log_s = log_ratio.sum(-1) / lens  # [B]; masked entries of log_ratio are 0
    seq_ratio = torch.exp(batch.logp - batch.logp.detach() + log_s[:, None])  # [B, T]
    per_token, _, low, high = _clipped_surrogate(seq_ratio, batch, cfg.eps_low, cfg.eps_high)
    return _output(batch, per_token, "seq-mean-token-mean", clip_low=low, clip_high=high)


def _check_registry() -> None:
    """Every configured kind has exactly one implementation, and vice versa."""
    if set(POLICY_LOSSES) != set(LOSS_PARAMS):
        raise RuntimeError(
            f"loss registry {sorted(POLICY_LOSSES)} != config kinds {sorted(LOSS_PARAMS)}"
        )
    if set(_AGGREGATORS) != set(AGGREGATIONS):
        raise RuntimeError(f"aggregators {sorted(_AGGREGATORS)} != {sorted(AGGREGATIONS)}")
    if not (_DRAWS_UNIFORMS | set(_SELECTIONS)) <= set(POLICY_LOSSES):
        raise RuntimeError("micro-batching metadata names a kind that is not registered")


_check_registry()
