"""Policy-loss configuration: one params model per loss kind, torch-free.

The recipe's ``loss`` block validates into one of these models (a pydantic discriminated union
on ``kind``). Each model accepts only the fields its variant reads; a field of another variant is
an error that names the fields this one does read. The torch implementations live in
``sweeper.rl.losses`` (one function per kind, registered under the same name).

Fields declare what the checks need to know: a field made with ``off_policy=True`` only acts
when the ratio can leave 1 (off-policy mini-batches), so a sweep over it on a job whose updates
are all on-policy is refused (:meth:`LossParams.off_policy_params`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import ConfigDict, Field, TypeAdapter, model_validator

from sweeper.config.base import StrictModel

Aggregation = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"
]
AGGREGATIONS: tuple[str, ...] = Aggregation.__args__  # type: ignore[attr-defined]


OFF_POLICY = "off_policy"
"""Field metadata key: the parameter acts only off-policy (see the module docstring)."""


def knob(default: Any, description: str, *, off_policy: bool, **bounds: Any) -> Any:
    """A loss parameter field that declares whether it acts only off-policy."""
    return Field(
        default, description=description, json_schema_extra={OFF_POLICY: off_policy}, **bounds
    )


class LossParams(StrictModel):
    """Shared behaviour: frozen, strict about keys (with a helpful message for a stray key) and
    about numbers (:mod:`sweeper.config.base`)."""

    model_config = ConfigDict(frozen=True)
    paper: ClassVar[str] = ""
    fixed_agg: ClassVar[str | None] = None
    """The aggregation of a kind that always uses one (no ``agg`` field)."""

    @property
    def aggregation(self) -> str:
        """How this loss reduces per-token losses: ``agg``, or the kind's fixed one."""
        return self.fixed_agg or str(getattr(self, "agg"))  # noqa: B009

    @classmethod
    def param_names(cls) -> list[str]:
        """The parameters this kind reads (every field but ``kind``)."""
        return [name for name in cls.model_fields if name != "kind"]

    @classmethod
    def off_policy_params(cls) -> list[str]:
        """The parameters declared ``off_policy``: they change nothing while the ratio is 1."""
        return [
            name
            for name, field in cls.model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(OFF_POLICY)
        ]

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
    return knob(0.2, "Lower clip: ratio floor is 1 - eps_low.", off_policy=True, ge=0.0, le=1.0)


def _eps_high() -> Any:
    return knob(
        0.2,
        "Upper clip: ratio ceiling is 1 + eps_high (`inf` = no clip-high).",
        off_policy=True,
        ge=0.0,  # also refuses nan
        allow_inf_nan=True,
    )


def _dual_clip() -> Any:
    return knob(
        None,
        "Dual-clip constant c > 1 for A<0 (Ye et al. 2019, arXiv 1912.09729); null = off.",
        off_policy=True,
        gt=1.0,
    )


def _agg() -> Any:
    return Field("token-mean", description="How per-token losses are reduced to a scalar.")


class PPOClipLoss(LossParams):
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


class NSRLoss(LossParams):
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
    # Rescue acts on tokens past a clip bound, which exist only off-policy.
    rescue_prob: float = knob(0.5, "Bernoulli rescue probability.", off_policy=True, ge=0.0, le=1.0)
    rescue_margin: float = knob(
        0.1, "Relative width m of the band just outside each bound.", off_policy=True, ge=0.0
    )
    rescue_sides: Literal["both", "low", "high"] = knob(
        "both", "Which bound(s) the rescue band applies to.", off_policy=True
    )


class ClipCovLoss(LossParams):
    """Clip-Cov: zero the loss of a random subset of high-covariance tokens (arXiv 2505.22617).

    cov_i = (A_i - mean A)(logp_i - mean logp) over valid tokens; among unclipped tokens with
    cov_lb < cov < cov_ub, max(floor(cov_ratio·N), 1) are chosen uniformly and get loss 0.
    """

    paper: ClassVar[str] = "Clip-Cov arXiv 2505.22617"
    kind: Literal["clip_cov"] = "clip_cov"
    eps_low: float = _eps_low()
    eps_high: float = _eps_high()
    agg: Aggregation = _agg()
    # Detaching tokens changes the gradient on-policy too: these act at ratio 1.
    cov_ratio: float = knob(
        2e-4, "Fraction of valid tokens to detach.", off_policy=False, gt=0.0, le=1.0
    )
    cov_lb: float = knob(1.0, "Lower covariance bound (exclusive).", off_policy=False)
    cov_ub: float = knob(5.0, "Upper covariance bound (exclusive).", off_policy=False)

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ClipCovLoss:
        if not self.cov_lb < self.cov_ub:
            raise ValueError(f"cov_lb ({self.cov_lb}) must be < cov_ub ({self.cov_ub})")
        return self


class KLCovLoss(LossParams):
    """KL-Cov: unclipped surrogate plus kl_coef·|logp - old_logp| on the top-k covariance tokens
    (arXiv 2505.22617), k = max(floor(cov_ratio·N), 1)."""

    paper: ClassVar[str] = "KL-Cov arXiv 2505.22617"
    kind: Literal["kl_cov"] = "kl_cov"
    agg: Aggregation = _agg()
    # The penalty |logp - old_logp| and its gradient vanish at ratio 1.
    cov_ratio: float = knob(
        2e-3, "Fraction of valid tokens penalised.", off_policy=True, gt=0.0, le=1.0
    )
    kl_coef: float = knob(1.0, "Weight of the |logp - old_logp| penalty.", off_policy=True, ge=0.0)


class GPPOLoss(LossParams):
    """GPPO: forward value of ``ppo_clip``, but clipped tokens keep a bounded gradient scaled by
    beta_low / beta_high (arXiv 2508.07629)."""

    paper: ClassVar[str] = "GPPO arXiv 2508.07629"
    kind: Literal["gppo"] = "gppo"
    eps_low: float = _eps_low()
    eps_high: float = _eps_high()
    dual_clip_c: float | None = _dual_clip()
    agg: Aggregation = _agg()
    beta_low: float = knob(
        1.0, "Gradient scale on A<0, r<1-eps_low tokens.", off_policy=True, ge=0.0
    )
    beta_high: float = knob(
        1.0, "Gradient scale on A>0, r>1+eps_high tokens.", off_policy=True, ge=0.0
    )


class GSPOLoss(LossParams):
    """GSPO: sequence-level ratio exp(mean_t(logp - old_logp)), clipped; always aggregated
    ``seq-mean-token-mean`` (arXiv 2507.18071)."""

    paper: ClassVar[str] = "GSPO arXiv 2507.18071"
    fixed_agg: ClassVar[str | None] = "seq-mean-token-mean"
    kind: Literal["gspo"] = "gspo"
    eps_low: float = knob(
        3e-4, "Lower clip on the sequence ratio.", off_policy=True, ge=0.0, le=1.0
    )
    eps_high: float = knob(
        4e-4,
        "Upper clip on the sequence ratio (`inf` = no clip-high).",
        off_policy=True,
        ge=0.0,  # also refuses nan
        allow_inf_nan=True,
    )


LossConfig = Annotated[
    PPOClipLoss | NSRLoss | ClipCovLoss | KLCovLoss | GPPOLoss | GSPOLoss,
    Field(discriminator="kind"),
]
"""The validated ``loss`` block: one params model per kind, chosen by ``kind``. This union is
the one list of loss kinds; :data:`LOSS_PARAMS` is derived from it."""

LOSS_PARAMS: dict[str, type[LossParams]] = {
    cls.model_fields["kind"].default: cls for cls in get_args(get_args(LossConfig)[0])
}
"""Every loss kind, by name, to its params model."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(LossConfig)


def parse_loss_config(value: Any) -> LossParams:
    """Validate a ``loss`` block (a dict, or an already validated model).

    An unknown ``kind`` raises ``ValueError`` listing the valid kinds; anything else a kind's
    model rejects raises pydantic's ``ValidationError``.
    """
    if isinstance(value, LossParams):
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
