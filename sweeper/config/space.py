"""Search-space types: what one searched parameter may take (torch- and optuna-free).

A recipe's ``space`` maps a dotted key into the job block (``loss.eps_low``) to either a plain
list (grid values; a categorical for Optuna) or a distribution::

    space:
      loss.eps_low: [0.1, 0.2, 0.3]
      loss.rescue_prob: {type: uniform, low: 0.0, high: 1.0}
      loss.rescue_margin: {type: log_uniform, low: 0.01, high: 0.5}
      steps: {type: int, low: 50, high: 200, step: 50}
      loss.eps_high: {type: choice, values: [0.2, 0.28, .inf]}
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import ConfigDict, Field, model_validator

from sweeper.config.base import INT64_MAX, StrictModel

Scalar = float | int | str | bool | None


class _Param(StrictModel):
    # Grid values may be inf (``loss.eps_high: [0.28, inf]``): each value is then validated
    # against the job field it is assigned to, which refuses inf where it means nothing.
    model_config = ConfigDict(frozen=True, allow_inf_nan=True)


_P = TypeVar("_P", bound="_Param")


def _check_values(spec: _P) -> _P:
    values = spec.values  # type: ignore[attr-defined]
    if any(isinstance(v, float) and math.isnan(v) for v in values):
        raise ValueError("values must not contain nan")
    big = [v for v in values if isinstance(v, int) and not -INT64_MAX <= v <= INT64_MAX]
    if big:
        raise ValueError(f"values {big} are out of range (at most 2**63 - 1 in magnitude)")
    if len(set(values)) != len(values):
        raise ValueError(f"values {values} contain duplicates (each would run twice)")
    return spec


class GridParam(_Param):
    """An explicit list of values (grid axis; categorical under Optuna)."""

    type: Literal["grid"] = "grid"
    values: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> GridParam:
        return _check_values(self)


class ChoiceParam(_Param):
    """One of a list of values (categorical)."""

    type: Literal["choice"] = "choice"
    values: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> ChoiceParam:
        return _check_values(self)


class UniformParam(_Param):
    """A float drawn uniformly from [low, high]."""

    type: Literal["uniform"] = "uniform"
    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> UniformParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self


class LogUniformParam(_Param):
    """A float drawn log-uniformly from [low, high], 0 < low < high."""

    type: Literal["log_uniform"] = "log_uniform"
    low: float = Field(gt=0.0, allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> LogUniformParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self


class IntParam(_Param):
    """An integer in [low, high] (inclusive) on a ``step`` lattice."""

    type: Literal["int"] = "int"
    low: int
    high: int
    step: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> IntParam:
        if not self.low <= self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


ParamSpec = Annotated[
    GridParam | ChoiceParam | UniformParam | LogUniformParam | IntParam,
    Field(discriminator="type"),
]


def coerce_param_spec(value: Any) -> Any:
    """A bare list in YAML means a grid axis; ``inf``-like strings in value lists become floats
    (see :func:`normalize_inf`)."""
    if isinstance(value, list):
        return {"type": "grid", "values": [normalize_inf(v) for v in value]}
    if isinstance(value, dict) and isinstance(value.get("values"), list):
        return {**value, "values": [normalize_inf(v) for v in value["values"]]}
    return value


# --------------------------------------------------------------------------- helpers

_INF_WORDS = {"inf": math.inf, "+inf": math.inf, "-inf": -math.inf, "infinity": math.inf}
_INF_WORDS |= {"+infinity": math.inf, "-infinity": -math.inf}
_INF_WORDS |= {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf}


def normalize_inf(value: Any) -> Any:
    """``"inf"``, ``"Infinity"``, ``".inf"`` (any case, optional sign) -> a float infinity.

    YAML reads ``.inf`` as a float but ``inf`` as a string; a float field accepts either, but a
    grid value (``float | int | str | ...``) would keep the string, so values are normalised
    here before validation. Other values are returned unchanged."""
    if isinstance(value, str) and value.strip().lower() in _INF_WORDS:
        return _INF_WORDS[value.strip().lower()]
    return value


def is_discrete(spec: Any) -> bool:
    """True for specs with finitely many values (grid, choice, int): these can form a grid."""
    return isinstance(spec, GridParam | ChoiceParam | IntParam)


def axis_values(spec: Any) -> list[Any]:
    """The values of one discrete axis, in order (``int``: low, low+step, ... <= high)."""
    if isinstance(spec, GridParam | ChoiceParam):
        return list(spec.values)
    if isinstance(spec, IntParam):
        return list(range(spec.low, spec.high + 1, spec.step))
    raise ValueError(f"{spec.type} is a continuous distribution: it has no finite list of values")


def axis_length(spec: Any) -> int:
    """How many values a discrete axis has (computed, never listed: an ``int`` range may be
    huge)."""
    if isinstance(spec, IntParam):
        return (spec.high - spec.low) // spec.step + 1
    return len(axis_values(spec))


def grid_size(space: dict[str, Any]) -> int:
    """Number of points of the full grid over ``space`` (product of the axis lengths; 1 if
    empty). Raises ``ValueError`` if an entry is continuous."""
    return math.prod(axis_length(spec) for spec in space.values())


def expand_grid(space: dict[str, Any]) -> list[dict[str, Any]]:
    """Every point of the Cartesian product, in a stable order: keys in ``space`` order, the last
    key varying fastest. An empty space has one point, ``{}`` (run the job as written)."""
    keys = list(space)
    axes = [axis_values(space[k]) for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]


def endpoint_values(spec: Any) -> list[Any]:
    """Values that must all be valid for the job for ``spec`` to be acceptable: every value of a
    list, both ends of a range (every point in between is then valid for interval bounds)."""
    if isinstance(spec, GridParam | ChoiceParam):
        return list(spec.values)
    if isinstance(spec, IntParam):
        last = spec.low + (axis_length(spec) - 1) * spec.step
        return [spec.low, last] if last != spec.low else [spec.low]
    return [spec.low, spec.high]


def describe_spec(spec: Any) -> str:
    """Short human form, e.g. ``[0.1, 0.2]``, ``uniform(0, 1)``, ``int(50..200 step 50)``."""
    if isinstance(spec, GridParam | ChoiceParam):
        return "[" + ", ".join(str(v) for v in spec.values) + "]"
    if isinstance(spec, IntParam):
        return f"int({spec.low}..{spec.high} step {spec.step})"
    return f"{spec.type}({spec.low:g}, {spec.high:g})"
