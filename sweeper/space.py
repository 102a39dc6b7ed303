"""Search-space types: what one searched parameter may take.

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

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = float | int | str | bool | None


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridParam(_Param):
    """An explicit list of values (grid axis; categorical under Optuna)."""

    type: Literal["grid"] = "grid"
    values: list[Scalar] = Field(min_length=1)


class ChoiceParam(_Param):
    """One of a list of values (categorical)."""

    type: Literal["choice"] = "choice"
    values: list[Scalar] = Field(min_length=1)


class UniformParam(_Param):
    """A float drawn uniformly from [low, high]."""

    type: Literal["uniform"] = "uniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> UniformParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        return self


class LogUniformParam(_Param):
    """A float drawn log-uniformly from [low, high], 0 < low < high."""

    type: Literal["log_uniform"] = "log_uniform"
    low: float = Field(gt=0.0)
    high: float

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
    """A bare list in YAML means a grid axis."""
    if isinstance(value, list):
        return {"type": "grid", "values": value}
    return value
