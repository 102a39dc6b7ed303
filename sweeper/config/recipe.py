"""The recipe schema: what to search (``space``), how (``search``), on what job (``job``), judged
how (``objective``) and run where (``run``). Pydantic models with ``extra="forbid"``, torch-free.

Validation runs the semantic checks of :mod:`sweeper.config.checks` after the schema; loading a
YAML file with ``--set`` overrides is :func:`sweeper.config.loader.load_recipe`. ``inf`` is
written ``.inf``, ``inf`` or ``Infinity``; :meth:`Recipe.resolved` writes it as the string
``"inf"`` (standard JSON, and it validates back to the same recipe).
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sweeper.config.base import StrictModel
from sweeper.config.checks import check_recipe
from sweeper.config.dotted import assign_dotted
from sweeper.config.job import JobConfig, RLVRJob
from sweeper.config.messages import explain_validation_error
from sweeper.config.racing import RacingConfig
from sweeper.config.space import ParamSpec, coerce_param_spec, expand_grid, grid_size
from sweeper.errors import InputError

MAX_SEEDS = 1000
"""Most seeds per trial (a count or a list)."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""A sweep or cluster name: one path component (no ``..`` either, see :func:`check_name`)."""


def check_name(value: str) -> str:
    """A name that is one safe path component: :data:`NAME_PATTERN` and no ``..``."""
    if ".." in value:
        raise ValueError(f"{value!r} must not contain '..' (it names a directory)")
    return value


class _Strict(StrictModel):
    """Unknown keys are errors; numbers are finite, never booleans (:mod:`.base`)."""


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
    sampler_seed: int | None = Field(
        0, ge=0, lt=2**32, description="Seed of the Optuna sampler (numpy takes 32 bits)."
    )
    n_trials: int | None = Field(
        None, ge=1, description="Trials to run (optuna; grid runs every point)."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=MAX_SEEDS,
        description="Seeds per trial (int = count).",
    )
    max_concurrent: int = Field(4, ge=1, description="Jobs running at once.")
    pruner: PrunerConfig | None = None
    racing: RacingConfig | None = Field(
        None, description="Race configs over seeds (successive elimination, sweeper.racing)."
    )

    @model_validator(mode="after")
    def _racing_seeds_exist(self) -> SearchConfig:
        if self.racing is not None and len(self.seeds) < self.racing.max_seeds:
            raise ValueError(
                f"racing.max_seeds={self.racing.max_seeds} needs at least that many seeds "
                f"(has {len(self.seeds)}); racing hands them out in order: set "
                f"seeds: {self.racing.max_seeds}"
            )
        return self

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_means_range(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= MAX_SEEDS:
                raise ValueError(f"seeds must be 1..{MAX_SEEDS} (a count) or a list of seeds")
            return list(range(value))
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds {value} contain duplicates (each job would run twice)")
        return value


_SCOPE = re.compile(r"^(last|avg|best|last-[1-9][0-9]*-avg)$")


class ConstraintConfig(_Strict):
    """A feasibility condition on a metric's value at the last step where it was measured,
    per seed. ``min_ratio`` compares it with the first measured value (e.g. final entropy
    >= 0.5 x step-0 entropy)."""

    metric: str
    min: float | None = None
    max: float | None = None
    min_ratio: float | None = Field(None, ge=0.0)

    @model_validator(mode="after")
    def _says_something(self) -> ConstraintConfig:
        if self.min is None and self.max is None and self.min_ratio is None:
            raise ValueError(f"constraint on {self.metric!r}: give min, max or min_ratio")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"constraint on {self.metric!r}: min {self.min} > max {self.max}")
        return self


class ObjectiveConfig(_Strict):
    """What ranks configs: ``metric`` over a trace ``scope``, aggregated over seeds."""

    metric: str = Field("mean_at_n", description="A trace column, e.g. pass_at_8, mean_at_n.")
    mode: Literal["max", "min"] = "max"
    scope: str = Field("last", description="last | avg | best | last-N-avg (over measured steps).")
    seed_agg: Literal["mean", "median", "min", "max", "iqm"] = Field(
        "mean", description="Over seeds; iqm = interquartile mean (rliable), see sweeper.stats."
    )
    constraints: list[ConstraintConfig] = Field(default_factory=list)

    @field_validator("scope")
    @classmethod
    def _scope_form(cls, value: str) -> str:
        if not _SCOPE.match(value):
            raise ValueError(f"scope {value!r} must be last, avg, best or last-N-avg (N >= 1)")
        return value


class ResourcesConfig(_Strict):
    """Resources each job's worker holds (fractional GPUs allowed)."""

    num_cpus: float = Field(1.0, ge=0.0, le=1e6)
    num_gpus: float = Field(0.0, ge=0.0, le=1e6)
    custom: dict[str, float] = Field(default_factory=dict)

    @field_validator("custom")
    @classmethod
    def _amounts(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"custom.{name}: a built-in resource; use num_cpus / num_gpus")
            if not 0.0 <= amount <= 1e6:
                raise ValueError(f"custom.{name}: {amount} must be in [0, 1e6]")
        return value


class RunConfig(_Strict):
    """Where results go and how faults are handled."""

    storage: str = Field("sweeps", description="Directory or URI holding sweep dirs.")
    max_retries: int = Field(2, ge=0, description="Retries of a job whose worker died.")
    optuna_storage: str | None = Field(
        None,
        description="SQLAlchemy URL where the Optuna study is mirrored (optuna-dashboard); "
        "default optuna.db in a local sweep dir, none for a remote one.",
    )
    resources: ResourcesConfig | None = Field(
        None, description="Per-job resources; overrides the cluster file's."
    )


class Recipe(_Strict):
    """A whole sweep."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    job: JobConfig = Field(default_factory=RLVRJob)
    space: dict[str, ParamSpec] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    _name_is_one_component = field_validator("name")(check_name)

    @field_validator("job", mode="before")
    @classmethod
    def _job_kind_defaults_to_rlvr(cls, value: object) -> object:
        # The job union is tagged by `kind`; a job block without one means the default, rlvr.
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "rlvr", **value}
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_grids(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: coerce_param_spec(v) for k, v in value.items()}
        return value

    # ----------------------------------------------------------------- semantic checks

    @model_validator(mode="after")
    def _space_fits_job(self) -> Recipe:
        check_recipe(self)
        return self

    # ----------------------------------------------------------------- queries

    def param_keys(self) -> list[str]:
        """The searched parameters (dotted keys into ``job``), in recipe order."""
        return list(self.space)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid point (Cartesian product of the axes, last key varying fastest).
        ``ValueError`` if the space has a continuous distribution."""
        return expand_grid(self.space)

    def n_configs(self) -> int:
        """Configs (trials) this recipe runs: the grid size, or ``search.n_trials``."""
        if self.search.kind == "grid":
            return grid_size(self.space)
        return int(self.search.n_trials or 0)

    def n_jobs(self) -> int:
        """Jobs this recipe runs when nothing is pruned: configs x seeds."""
        return self.n_configs() * len(self.search.seeds)

    def job_for(self, params: dict[str, Any]) -> JobConfig:
        """The job of one trial: each dotted key of ``params`` assigned into the job block, and
        the job validated again. ``InputError`` (one line) if the result is not a valid job."""
        # Every default filled in, as resolved() writes it: a recipe and its resolved copy give
        # the same jobs.
        data = self.job.model_dump(mode="python")
        for key, value in params.items():
            assign_dotted(data, key.split("."), value, f"space.{key}")
        try:
            return _JobHolder.model_validate({"job": data}).job
        except ValidationError as err:
            raise InputError(explain_validation_error(err, _JobHolder, "")) from None

    def resolved(self) -> dict[str, Any]:
        """The fully resolved recipe (every default filled in) as JSON-able data; infinities are
        the strings ``"inf"`` / ``"-inf"``, so ``json.dumps`` writes standard JSON and
        ``Recipe.model_validate(resolved())`` gives back an equal recipe."""
        return _jsonable(self.model_dump(mode="python"))

    def summary(self) -> str:
        """One line: what runs, e.g. ``grid of 4 configs x 2 seeds = 8 jobs``."""
        seeds = len(self.search.seeds)
        if self.search.kind == "grid":
            how = f"grid of {self.n_configs()} configs"
        else:
            how = f"optuna {self.search.sampler} over {len(self.space)} params, {self.n_configs()} trials"
        loss = self.job.loss.kind
        pruner = self.search.pruner.kind if self.search.pruner else "none"
        return (
            f"recipe {self.name}: {how} x {seeds} seeds = {self.n_jobs()} jobs; "
            f"{self.job.kind} job, loss {loss}, {self.job.steps} steps; objective "
            f"{self.objective.mode} {self.objective.metric} ({self.objective.scope}); "
            f"pruner {pruner}"
        )


class _JobHolder(BaseModel):
    """Validates a job dict with error locations that start at ``job``."""

    model_config = ConfigDict(extra="forbid")
    job: JobConfig


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
