"""Recipes: what to search (``space``), how (``search``), on what job (``job``), judged how
(``objective``) and run where (``run``). YAML validated by pydantic with ``extra="forbid"``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sweeper.config.job import JobConfig, RLVRJob
from sweeper.space import ParamSpec, coerce_param_spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrunerConfig(_Strict):
    """An Optuna pruner acting on intermediate eval values of the objective metric."""

    kind: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0, description="Trials finished before pruning starts.")
    n_warmup_steps: int = Field(0, ge=0, description="Steps before a trial can be pruned.")
    percentile: float = Field(25.0, gt=0.0, lt=100.0, description="For kind: percentile.")


class SearchConfig(_Strict):
    """How to search: a full grid, or Optuna's sampler for ``n_trials`` trials."""

    kind: Literal["grid", "optuna"] = "grid"
    sampler: Literal["tpe", "random", "cmaes", "gp", "qmc"] = Field(
        "tpe", description="Optuna sampler (kind: optuna)."
    )
    sampler_seed: int | None = Field(0, description="Seed of the Optuna sampler.")
    n_trials: int | None = Field(
        None, ge=1, description="Trials to run (optuna; grid runs every point)."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="Seeds per trial (int = count)."
    )
    max_concurrent: int = Field(4, ge=1, description="Jobs running at once.")
    pruner: PrunerConfig | None = None

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_means_range(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("seeds must be >= 1 (a count) or a list of seeds")
            return list(range(value))
        return value


_SCOPE = re.compile(r"^(last|avg|best|last-(\d+)-avg)$")


class ConstraintConfig(_Strict):
    """A feasibility condition on a metric's value at the last step where it was measured,
    per seed. ``min_ratio`` compares it with the first measured value (e.g. final entropy
    >= 0.5 x step-0 entropy)."""

    metric: str
    min: float | None = None
    max: float | None = None
    min_ratio: float | None = Field(None, ge=0.0)


class ObjectiveConfig(_Strict):
    """What ranks configs: ``metric`` over a trace ``scope``, aggregated over seeds."""

    metric: str = Field("mean_at_n", description="A trace column, e.g. pass_at_8, mean_at_n.")
    mode: Literal["max", "min"] = "max"
    scope: str = Field("last", description="last | avg | best | last-N-avg (over measured steps).")
    seed_agg: Literal["mean", "median", "min", "max"] = "mean"
    constraints: list[ConstraintConfig] = Field(default_factory=list)

    @field_validator("scope")
    @classmethod
    def _scope_form(cls, value: str) -> str:
        if not _SCOPE.match(value):
            raise ValueError(f"scope {value!r} must be last, avg, best or last-N-avg (N >= 1)")
        return value


class ResourcesConfig(_Strict):
    """Resources each job's worker holds (fractional GPUs allowed)."""

    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    custom: dict[str, float] = Field(default_factory=dict)


class RunConfig(_Strict):
    """Where results go and how faults are handled."""

    storage: str = Field("sweeps", description="Directory or URI holding sweep dirs.")
    max_retries: int = Field(2, ge=0, description="Retries of a job whose worker died.")
    optuna_storage: str | None = Field(
        None, description="SQLAlchemy URL of the Optuna study; default a file in the sweep dir."
    )
    resources: ResourcesConfig | None = Field(
        None, description="Per-job resources; overrides the cluster file's."
    )


class Recipe(_Strict):
    """A whole sweep."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description: str = ""
    job: JobConfig = Field(default_factory=RLVRJob)
    space: dict[str, ParamSpec] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_grids(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: coerce_param_spec(v) for k, v in value.items()}
        return value
