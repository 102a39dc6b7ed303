"""What a recipe's schema alone cannot check (run by ``Recipe``'s validator).

- ``grid`` needs discrete axes (lists, ``choice``, ``int``); ``optuna`` needs ``n_trials`` and a
  non-empty space; the job and loss ``kind`` are fixed per recipe, never searched;
- every ``space`` value (and both ends of every range) gives a valid job, and so does every point
  of a grid of up to ``GRID_CHECK_LIMIT`` points (catches ``cov_lb >= cov_ub`` across keys);
- loss parameters that the loss kind declares as acting only off-policy
  (:meth:`~sweeper.config.loss.LossParams.off_policy_params`) are not searched on a job whose
  updates are all on-policy (one mini-batch, one epoch: the ratio is identically 1);
- the objective and every constraint name a column the job produces
  (:meth:`~sweeper.config.job.RLVRJob.trace_columns`): a typo, or ``pass_at_16`` with
  ``eval.ks: [1, 8]``, would otherwise run every trial for nothing;
- a grid has at most ``MAX_GRID_POINTS`` points (each becomes a trial up front).

Each check raises ``ValueError`` with a message that names the field; pydantic turns it into the
validation error the loader reports on one line.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Protocol

from sweeper.config.space import (
    describe_spec,
    endpoint_values,
    expand_grid,
    grid_size,
    is_discrete,
)
from sweeper.errors import InputError


class CheckedRecipe(Protocol):
    """What the checks read of a recipe (``sweeper.config.recipe.Recipe``, which runs them)."""

    space: dict[str, Any]
    search: Any
    job: Any
    objective: Any

    def job_for(self, params: dict[str, Any]) -> Any: ...


GRID_CHECK_LIMIT = 10_000
"""Grids up to this many points are validated point by point at load time."""

MAX_GRID_POINTS = 100_000
"""The largest grid a recipe may hold (every point is enqueued as a trial when the sweep starts);
larger spaces are for ``search.kind: optuna`` with ``n_trials``."""


def check_recipe(recipe: CheckedRecipe) -> None:
    """Every semantic check of a recipe, in order; ``ValueError`` on the first failure."""
    _check_search(recipe)
    jobs = _check_space_values(recipe)
    _check_clipping_can_act(recipe, jobs)
    _check_metrics(recipe, jobs)


def _check_search(recipe: CheckedRecipe) -> None:
    for key in ("kind", "loss.kind"):
        if key in recipe.space:
            raise ValueError(
                f"space.{key}: the {'loss' if key == 'loss.kind' else 'job'} kind cannot be "
                "searched (each kind reads different parameters); write one recipe per kind, "
                f"or pick one with --set job.{key}=..."
            )
    if recipe.search.kind == "grid":
        for key, spec in recipe.space.items():
            if not is_discrete(spec):
                raise ValueError(
                    f"space.{key}: {describe_spec(spec)} is a distribution, but search.kind is "
                    "grid; give a list of values, or use search.kind: optuna with n_trials"
                )
        points = grid_size(recipe.space)
        if points > MAX_GRID_POINTS:
            raise ValueError(
                f"space: the grid has {points} points, more than {MAX_GRID_POINTS}; use "
                "search.kind: optuna with n_trials to search a space this large"
            )
    else:
        if recipe.search.n_trials is None:
            raise ValueError("search.n_trials: required when search.kind is optuna")
        if not recipe.space:
            raise ValueError("space: empty, so optuna has nothing to search; use search.kind: grid")


def _checkable_grid(recipe: CheckedRecipe) -> list[dict[str, Any]] | None:
    """All points of the space when it is discrete and small enough to check them all."""
    if not all(is_discrete(spec) for spec in recipe.space.values()):
        return None
    if grid_size(recipe.space) > GRID_CHECK_LIMIT:
        return None
    return expand_grid(recipe.space)


def _contexts(recipe: CheckedRecipe, key: str) -> list[dict[str, Any]]:
    """Settings of the other searched keys to try a value of ``key`` with (their values, or the
    ends of their ranges), or none if there are too many."""
    others = {k: endpoint_values(spec) for k, spec in recipe.space.items() if k != key}
    if math.prod(len(v) for v in others.values()) > GRID_CHECK_LIMIT:
        return []
    keys = list(others)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*others.values())]


def _check_space_values(recipe: CheckedRecipe) -> list[Any]:
    """Check every value (and every point of a checkable grid); returns the jobs of the grid
    points (or of the base job when the grid is not checkable)."""
    # One key at a time first, so the message names the key at fault. A value that fails alone
    # may still be fine next to another key's value (cov_lb 6 is valid with cov_ub 10): it is
    # refused only if no setting of the other keys makes it valid.
    for key, spec in recipe.space.items():
        for value in endpoint_values(spec):
            try:
                recipe.job_for({key: value})
                continue
            except InputError as err:
                alone = err
            for context in _contexts(recipe, key):
                try:
                    recipe.job_for({**context, key: value})
                    break
                except InputError:
                    pass
            else:
                raise ValueError(
                    f"space.{key}: value {_show(value)} does not give a valid job: {alone}"
                ) from None
    # Then whole points: catches constraints across keys (cov_lb < cov_ub).
    jobs = []
    for point in _checkable_grid(recipe) or [{}]:
        try:
            jobs.append(recipe.job_for(point))
        except InputError as err:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in point.items())
            raise ValueError(f"space: point {{{shown}}} does not give a valid job: {err}") from None
    return jobs


def _off_policy_keys(recipe: CheckedRecipe) -> list[str]:
    """The searched keys that the loss kind declares as acting only off-policy."""
    knobs = set(type(recipe.job.loss).off_policy_params())
    return [k for k in recipe.space if k.startswith("loss.") and k.removeprefix("loss.") in knobs]


def _check_clipping_can_act(recipe: CheckedRecipe, jobs: list[Any]) -> None:
    keys = _off_policy_keys(recipe)
    if not keys:
        return
    for job in jobs:
        if not getattr(job, "clipping_can_act", True):
            raise ValueError(
                f"space: sweeps clip parameters ({', '.join(keys)}) but job.mini_batches="
                f"{getattr(job, 'mini_batches', '?')} and job.ppo_epochs="
                f"{getattr(job, 'ppo_epochs', '?')}: every update is on-policy (ratio = 1), so "
                "clipping cannot act; set job.mini_batches >= 2 (or job.ppo_epochs >= 2)"
            )


def _check_metrics(recipe: CheckedRecipe, jobs: list[Any]) -> None:
    """The objective and constraint metrics are columns of every job's trace rows."""
    named = [("objective.metric", recipe.objective.metric)] + [
        (f"objective.constraints.{i}.metric", c.metric)
        for i, c in enumerate(recipe.objective.constraints)
    ]
    for job in jobs or [recipe.job]:
        columns = [c for c in job.trace_columns() if c != "step"]
        for where, metric in named:
            if metric not in columns:
                ks = f" with eval.ks {list(job.eval.ks)}" if metric.startswith("pass_at_") else ""
                raise ValueError(
                    f"{where}: {metric!r} is not a column the {job.kind} job produces{ks}; "
                    f"it produces: {', '.join(columns)}"
                )


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)
