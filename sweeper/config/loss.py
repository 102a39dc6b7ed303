"""Policy-loss configuration: one params model per loss kind, torch-free.

The recipe's ``loss`` block validates into one of these models (a pydantic discriminated union
on ``kind``). Each model accepts only the fields its variant reads; a field of another variant is
an error that names the fields this one does read. The torch implementations live in
``sweeper.rl.losses`` (one function per kind, registered under the same name).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Aggregation = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
AGGREGATIONS: tuple[str, ...] = Aggregation.__args__  # type: ignore[attr-defined]


class _LossParams(BaseModel):
    """Shared behaviour: frozen, strict about keys, with a helpful message for a stray key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    paper: ClassVar[str] = ""

    @classmethod
    def param_names(cls) -> list[str]:
        """The parameters this kind reads (every field but ``kind``)."""
        return [name for name in cls.model_fields if name != "kind"]

    @model_validator(mode="before")
    @classmethod
    def _reject_foreign_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                kind = cls.model_fields["kind"].default
                raise ValueError(
                    f"loss kind '{kind}' does not read {', '.join(map(repr, unknown))}; "
                    f"it reads: {', '.join(cls.param_names())}"
                )
        return data


def _eps_low() -> Any:
    return Field(0.2, ge=0.0, le=1.0, description="Lower clip: ratio floor is 1 - eps_low.")


def _eps_high() -> Any:
    return Field(
        0.2, ge=0.0, description="Upper clip: ratio ceiling is 1 + eps_high (`inf` = no clip-high)."
    )


def _dual_clip() -> Any:
    return Field(
        None,
        gt=1.0,
        description="Dual-clip constant c > 1 for A<0 (Ye et al. 2019, arXiv 1912.09729); null = off.",
    )


def _agg() -> Any:
    return Field("token-mean", description="How per-token losses are reduced to a scalar.")


class PPOClipLoss(_LossParams):
    """PPO clipped surrogate with asymmetric bounds, optional dual clip.

    GRPO (eps 0.2/0.2, arXiv 2402.03300) and DAPO clip-higher (0.2/0.28, arXiv 2503.14476) are
    settings of this kind.
    """

    paper: ClassVar[str] = "PPO arXiv 1707.06347; DAPO arXiv 2503.14476; dual clip arXiv 1912.09729"
    kind: Literal["ppo_clip"] = "ppo_clip"
    eps_low: float = _eps_low()
    eps_high: float = _eps_high()
    dual_clip_c: float | None = _dual_clip()
    agg: Aggregation = _agg()


class NSRLoss(_LossParams):
    """Near-boundary Stochastic Rescue: tokens just outside the active clip bound are kept
    (unclipped) with probability ``rescue_prob``.

    A>0 tokens with 1+eps_high < r <= (1+eps_high)(1+m) and A<0 tokens with
    (1-eps_low)(1-m) <= r < 1-eps_low are candidates; ``rescue_sides`` picks which bounds apply.
    The paper (arXiv 2605.22703) gives no public code; this is sweeper's documented reading.
    """

    paper: ClassVar[str] = "NSR arXiv 2605.22703 (our reading)"
    kind: Literal["nsr"] = "nsr"
    eps_low: float = _eps_low()
    eps_high: float = _eps_high()
    dual_clip_c: float | None = _dual_clip()
    agg: Aggregation = _agg()
    rescue_prob: float = Field(0.5, ge=0.0, le=1.0, description="Bernoulli rescue probability.")
    rescue_margin: float = Field(
        0.1, ge=0.0, description="Relative width m of the band just outside each bound."
    )
    rescue_sides: Literal["both", "low", "high"] = Field(
        "both", description="Which bound(s) the rescue band applies to."
    )


class ClipCovLoss(_LossParams):
    """Clip-Cov: zero the loss of a random subset of high-covariance tokens (arXiv 2505.22617).

    cov_i = (A_i - mean A)(logp_i - mean logp) over valid tokens; among unclipped tokens with
    cov_lb < cov < cov_ub, max(floor(cov_ratio·N), 1) are chosen uniformly and get loss 0.
    """

    paper: ClassVar[str] = "Clip-Cov arXiv 2505.22617"
    kind: Literal["clip_cov"] = "clip_cov"
    eps_low: float = _eps_low()
    eps_high: float = _eps_high()
    agg: Aggregation = _agg()
    cov_ratio: float = Field(
        2e-4, gt=0.0, le=1.0, description="Fraction of valid tokens to detach."
    )
    cov_lb: float = Field(1.0, description="Lower covariance bound (exclusive).")
    cov_ub: float = Field(5.0, description="Upper covariance bound (exclusive).")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ClipCovLoss:
        if not self.cov_lb < self.cov_ub:
            raise ValueError(f"cov_lb ({self.cov_lb}) must be < cov_ub ({self.cov_ub})")
        return self


class KLCovLoss(_LossParams):
    """KL-Cov: unclipped surrogate plus kl_coef·|logp - old_logp| on the top-k covariance tokens
    (arXiv 2505.22617), k = max(floor(cov_ratio·N), 1)."""

    paper: ClassVar[str] = "KL-Cov arXiv 2505.22617"
    kind: Literal["kl_cov"] = "kl_cov"
    agg: Aggregation = _agg()
    cov_ratio: float = Field(
        2e-3, gt=0.0, le=1.0, description="Fraction of valid tokens penalised."
    )
    kl_coef: float = Field(1.0, ge=0.0, description="Weight of the |logp - old_logp| penalty.")


class GPPOLoss(_LossParams):
    """GPPO: forward value of ``ppo_clip``, but clipped tokens keep a bounded gradient scaled by
    beta_low / beta_high (arXiv 2508.07629)."""

    paper: ClassVar[str] = "GPPO arXiv 2508.07629"
    kind: Literal["gppo"] = "gppo"
    eps_low: float = _eps_low()
    eps_high: float = _eps_high()
    dual_clip_c: float | None = _dual_clip()
    agg: Aggregation = _agg()
    beta_low: float = Field(1.0, ge=0.0, description="Gradient scale on A<0, r<1-eps_low tokens.")
    beta_high: float = Field(1.0, ge=0.0, description="Gradient scale on A>0, r>1+eps_high tokens.")


class GSPOLoss(_LossParams):
    """GSPO: sequence-level ratio exp(mean_t(logp - old_logp)), clipped; always aggregated
    ``seq-mean-token-mean`` (arXiv 2507.18071)."""

    paper: ClassVar[str] = "GSPO arXiv 2507.18071"
    kind: Literal["gspo"] = "gspo"
    eps_low: float = Field(3e-4, ge=0.0, le=1.0, description="Lower clip on the sequence ratio.")
    eps_high: float = Field(4e-4, ge=0.0, description="Upper clip on the sequence ratio.")


LOSS_PARAMS: dict[str, type[_LossParams]] = {
    cls.model_fields["kind"].default: cls
    for cls in (PPOClipLoss, NSRLoss, ClipCovLoss, KLCovLoss, GPPOLoss, GSPOLoss)
}
"""Every loss kind, by name, to its params model."""

LossConfig = Annotated[
    PPOClipLoss | NSRLoss | ClipCovLoss | KLCovLoss | GPPOLoss | GSPOLoss,
    Field(discriminator="kind"),
]
"""The validated ``loss`` block: one params model per kind, chosen by ``kind``."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(LossConfig)


def parse_loss_config(value: Any) -> _LossParams:
    """Validate a ``loss`` block (a dict, or an already validated model).

    An unknown ``kind`` raises ``ValueError`` listing the valid kinds; anything else a kind's
    model rejects raises pydantic's ``ValidationError``.
    """
    if isinstance(value, _LossParams):
        return value
    if isinstance(value, dict):
        kind = value.get("kind", "ppo_clip")
        if kind not in LOSS_PARAMS:
            raise ValueError(
                f"unknown loss kind {kind!r}; valid kinds: {', '.join(sorted(LOSS_PARAMS))}"
            )
        value = {"kind": kind, **value}
    return _ADAPTER.validate_python(value)


def loss_catalog() -> list[dict[str, Any]]:
    """Every loss kind with its parameters (name, type, default, description) and paper."""
    catalog = []
    for kind, cls in LOSS_PARAMS.items():
        params = []
        for name in cls.param_names():
            field = cls.model_fields[name]
            default = field.default
            if isinstance(default, float) and math.isinf(default):
                default = "inf"
            params.append(
                {
                    "name": name,
                    "type": getattr(field.annotation, "__name__", str(field.annotation)),
                    "default": default,
                    "description": field.description or "",
                }
            )
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        catalog.append({"kind": kind, "summary": doc, "paper": cls.paper, "params": params})
    return catalog
