"""Ranking: from step traces to one value per trial (pure functions on DataFrames).

A trial's value is computed in two stages, as in Ray Tune's ``scope``:

1. per (trial, seed): the objective metric over the steps where it was measured (non-NaN;
   non-finite values dropped), reduced by ``objective.scope``: ``last`` value, ``avg`` over
   steps, ``best`` (max or min by ``mode``), ``last-N-avg`` (mean of the last N measured);
2. per trial: those seed values aggregated by ``objective.seed_agg`` (mean/median/min/max).

Constraints are per seed, on a metric's last measured value (``min``/``max``), or on its ratio
to its first measured value (``min_ratio``, e.g. final entropy >= 0.5 x step-0 entropy). A seed
that never measured a constrained metric is infeasible; a trial is feasible when all its
measured seeds are.

Only completed attempts are ranked: pass the store's ``read_traces(completed_only=True)``
(:func:`rank_sweep` does). Trials whose state is not COMPLETE are kept in the table, after every
COMPLETE trial, so that a ranking is also a full listing of the sweep.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sweeper.config.recipe import ObjectiveConfig

if TYPE_CHECKING:
    from sweeper.store import SweepStore

RANK_COLUMNS = ("rank", "trial", "state")
"""The first columns of :func:`rank`'s table; then the params, then :data:`VALUE_COLUMNS`."""
VALUE_COLUMNS = ("value", "value_std", "n_seeds", "final_entropy", "feasible")

_LAST_N = re.compile(r"^last-(\d+)-avg$")
_AGG: dict[str, Callable[[np.ndarray], Any]] = {
    "mean": np.mean,
    "median": np.median,
    "min": np.min,
    "max": np.max,
}


def _measured(df: pd.DataFrame, metric: str) -> np.ndarray:
    """The finite values of ``metric`` in step order (the caller sorted ``df`` by step)."""
    if metric not in df.columns:
        return np.empty(0)
    values = pd.to_numeric(df[metric], errors="coerce").to_numpy(dtype="float64")
    return values[np.isfinite(values)]


def scope_value(values: np.ndarray, scope: str, mode: str) -> float:
    """Reduce one seed's measured values (step order, finite) by ``scope``; NaN when empty."""
    if values.size == 0:
        return math.nan
    if scope == "last":
        return float(values[-1])
    if scope == "avg":
        return float(values.mean())
    if scope == "best":
        return float(values.max() if mode == "max" else values.min())
    m = _LAST_N.match(scope)
    if m:
        return float(values[-int(m.group(1)) :].mean())
    raise ValueError(f"unknown scope {scope!r}")


def _latest_attempts(traces: pd.DataFrame) -> pd.DataFrame:
    """Keep, per (trial, seed), only the rows of its highest attempt (a retried job's last)."""
    if "attempt" not in traces.columns or traces.empty:
        return traces
    top = traces.groupby(["trial", "seed"])["attempt"].transform("max")
    return traces[traces["attempt"] == top]


def seed_values(traces: pd.DataFrame, objective: ObjectiveConfig) -> pd.DataFrame:
    """One row per (trial, seed): ``value`` (by ``objective.scope`` over measured steps, NaN if
    never measured), ``feasible`` (every constraint holds on this seed) and ``final_entropy``
    (the last measured ``entropy``, NaN without one)."""
    cols = ["trial", "seed", "value", "feasible", "final_entropy"]
    if traces.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols}).astype(
            {"trial": "int64", "seed": "int64", "feasible": "bool"}
        )
    traces = _latest_attempts(traces).sort_values(["trial", "seed", "step"], kind="stable")
    out: list[dict[str, Any]] = []
    for (trial, seed), group in traces.groupby(["trial", "seed"], sort=True):
        values = _measured(group, objective.metric)
        entropy = _measured(group, "entropy")
        out.append(
            {
                "trial": int(trial),
                "seed": int(seed),
                "value": scope_value(values, objective.scope, objective.mode),
                "feasible": all(_holds(group, c) for c in objective.constraints),
                "final_entropy": float(entropy[-1]) if entropy.size else math.nan,
            }
        )
    return pd.DataFrame(out, columns=cols)


def _holds(group: pd.DataFrame, constraint: Any) -> bool:
    """One constraint on one seed's trace (rows in step order)."""
    values = _measured(group, constraint.metric)
    if values.size == 0:
        return False  # unmeasured: cannot be shown to hold
    last = float(values[-1])
    if constraint.min is not None and last < constraint.min:
        return False
    if constraint.max is not None and last > constraint.max:
        return False
    return not (constraint.min_ratio is not None and last < constraint.min_ratio * values[0])


def _aggregate(values: np.ndarray, how: str) -> float:
    values = values[np.isfinite(values)]
    return float(_AGG[how](values)) if values.size else math.nan


def trial_value(traces_of_one_trial: pd.DataFrame, objective: ObjectiveConfig) -> float:
    """The seed-aggregated objective of one trial (NaN if nothing measured); what the
    controller reports to Optuna. Constraints are not applied here (see :func:`rank`)."""
    per_seed = seed_values(traces_of_one_trial, objective)
    return _aggregate(per_seed["value"].to_numpy(dtype="float64"), objective.seed_agg)


def rank(
    trials: pd.DataFrame,
    traces: pd.DataFrame,
    objective: ObjectiveConfig,
    param_keys: list[str] | tuple[str, ...],
) -> pd.DataFrame:
    """One row per trial of ``trials``, best first.

    Columns: ``rank`` (1 = best), ``trial``, ``state``, one per param key, ``value`` (seed
    aggregate by ``objective.seed_agg``), ``value_std`` (sample std over seeds; NaN for one
    seed), ``n_seeds`` (seeds with a measured value), ``final_entropy`` (mean over seeds of the
    last measured ``entropy``), ``feasible``.

    Order: COMPLETE trials first -- feasible with a value, then infeasible with a value, then
    without a value -- each by value (descending for ``mode: max``), then non-COMPLETE trials in
    the same order; ties by trial id. ``traces`` should hold completed attempts only.
    """
    per_seed = seed_values(traces, objective)
    by_trial = {int(t): g for t, g in per_seed.groupby("trial")}
    rows: list[dict[str, Any]] = []
    for rec in trials.to_dict("records"):
        trial = int(rec["trial"])
        g = by_trial.get(trial)
        values = g["value"].to_numpy(dtype="float64") if g is not None else np.empty(0)
        finite = values[np.isfinite(values)]
        entropy = g["final_entropy"].to_numpy(dtype="float64") if g is not None else np.empty(0)
        entropy = entropy[np.isfinite(entropy)]
        if g is not None and len(g):
            feasible = bool(g["feasible"].all())
        else:
            feasible = not objective.constraints
        row: dict[str, Any] = {"trial": trial, "state": rec.get("state")}
        for key in param_keys:
            row[key] = rec.get(key)
        row.update(
            value=_aggregate(values, objective.seed_agg),
            value_std=float(np.std(finite, ddof=1)) if finite.size > 1 else math.nan,
            n_seeds=int(finite.size),
            final_entropy=float(entropy.mean()) if entropy.size else math.nan,
            feasible=feasible,
        )
        rows.append(row)
    columns = ["trial", "state", *param_keys, *VALUE_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        table.insert(0, "rank", pd.Series(dtype="int64"))
        return table
    has_value = np.isfinite(table["value"].to_numpy(dtype="float64"))
    group = np.where(
        has_value & table["feasible"].to_numpy(dtype=bool), 0, np.where(has_value, 1, 2)
    ) + np.where(table["state"].to_numpy() == "COMPLETE", 0, 3)
    sign = -1.0 if objective.mode == "max" else 1.0
    by_value = np.where(has_value, sign * table["value"].to_numpy(dtype="float64"), 0.0)
    order = np.lexsort((table["trial"].to_numpy(), by_value, group))
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1, dtype="int64"))
    return table


def param_keys_of(store: SweepStore, trials: pd.DataFrame | None = None) -> list[str]:
    """The searched parameter keys of a sweep: the resolved recipe's ``space`` keys, else the
    trials.parquet columns that are not fixed columns."""
    from sweeper.store import TRIAL_COLUMNS

    space = store.read_resolved().get("space") or {}
    if space:
        return list(space)
    if trials is None:
        trials = store.read_trials()
    return [c for c in trials.columns if c not in TRIAL_COLUMNS]


def objective_of(store: SweepStore) -> ObjectiveConfig:
    """The objective block of a sweep's resolved recipe (defaults if absent)."""
    return ObjectiveConfig.model_validate(store.read_resolved().get("objective") or {})


def rank_sweep(store: SweepStore, objective: ObjectiveConfig | None = None) -> pd.DataFrame:
    """:func:`rank` of a sweep dir: its trials, completed traces, objective and params."""
    trials = store.read_trials()
    traces = store.read_traces(completed_only=True)
    objective = objective or objective_of(store)
    return rank(trials, traces, objective, param_keys_of(store, trials))
