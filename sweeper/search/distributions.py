"""Optuna's view of a search space: one distribution per parameter spec, and the matching
``suggest_*`` call (optuna imported lazily)."""

from __future__ import annotations

from typing import Any

from sweeper.config.space import (
    ChoiceParam,
    GridParam,
    IntParam,
    LogUniformParam,
    UniformParam,
    axis_values,
)


def optuna_distribution(spec: Any, grid: bool = False) -> Any:
    """The Optuna distribution for one spec (optuna imported lazily).

    ``grid=True`` (a grid search) maps every discrete spec, ints included, to a categorical over
    its values so enqueued grid points always lie inside it."""
    import optuna.distributions as od

    if grid or isinstance(spec, GridParam | ChoiceParam):
        return od.CategoricalDistribution(axis_values(spec))
    if isinstance(spec, UniformParam):
        return od.FloatDistribution(spec.low, spec.high)
    if isinstance(spec, LogUniformParam):
        return od.FloatDistribution(spec.low, spec.high, log=True)
    if isinstance(spec, IntParam):
        # Optuna wants high on the step lattice.
        high = spec.low + (spec.high - spec.low) // spec.step * spec.step
        return od.IntDistribution(spec.low, high, step=spec.step)
    raise TypeError(f"not a parameter spec: {spec!r}")


def suggest(trial: Any, key: str, spec: Any, grid: bool = False) -> Any:
    """Ask an Optuna trial for one parameter with the public ``suggest_*`` call matching the
    spec (a trial whose params were enqueued gets the enqueued value back). ``grid=True``: every
    axis is a categorical over its values, as in :func:`optuna_distribution`."""
    if grid or isinstance(spec, GridParam | ChoiceParam):
        return trial.suggest_categorical(key, axis_values(spec))
    if isinstance(spec, UniformParam):
        return trial.suggest_float(key, spec.low, spec.high)
    if isinstance(spec, LogUniformParam):
        return trial.suggest_float(key, spec.low, spec.high, log=True)
    if isinstance(spec, IntParam):
        dist = optuna_distribution(spec)
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step)
    raise TypeError(f"not a parameter spec: {spec!r}")
