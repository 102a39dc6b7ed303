"""Rebuild a sweep's Optuna study from the sweep dir alone: no database is needed to resume.

:func:`rebuild_trials` returns the study's trials, numbered as the sweep numbered them:

- every trial of trials.parquet with its params (typed by the recipe's space through
  :func:`~sweeper.search.distributions.optuna_distribution`), state, value, times, user attrs
  (``error``, ``racing``) and intermediate values -- the per-step means over the trial's seeds that
  the pruner was told, recomputed from the traces of its attempts (per seed and step, the first
  attempt that reached the step; a step counts once every seed the trial lists reached it with a
  finite value; a pruned trial's up to the step it was pruned at). A PRUNED trial's value is its
  last intermediate value, as Optuna records it;
- a trial the controller did not finish (RUNNING, or an error beginning ``interrupted``) is RUNNING
  again, so the resume closes and reruns it -- unless a later trial already reruns its params, then
  it is FAIL with ``sweeper_recovered`` and the rerun carries ``sweeper_rerun_of``;
- a grid's points still to hand out are WAITING at their grid index (the grid is enqueued in order
  when a sweep starts, so trial ``k < grid size`` is point ``k``); a grid point that started but
  was never recorded is RUNNING, to be rerun;
- a number that was asked but never recorded (the controller was killed between ask and write)
  beyond the grid is a FAIL filler marked ``sweeper_recovered``: it does not count towards
  ``n_trials`` and its params are unknown, so the budget slot is asked again.

Not rebuilt, because the sweep dir does not hold them: sampler-internal trial system attrs
(CMA-ES's search distribution restarts; successive halving's and Hyperband's rung records start
over) and the RNG state (a rebuilt sampler gets a seed derived from ``sampler_seed`` and the
trial count, see :func:`~sweeper.search.samplers.resumed_seed`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sweeper.search.attrs import (
    ATTR_ERROR,
    ATTR_RACING,
    ATTR_RECOVERED,
    ATTR_RERUN_OF,
    INTERRUPTED,
)
from sweeper.search.distributions import optuna_distribution

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from sweeper.config.recipe import Recipe
    from sweeper.store import SweepStore

NEVER_RECORDED = "interrupted: the controller ended before it recorded this trial"
RERUN_REASON = "interrupted: controller ended; rerun as a new trial"
"""Why a resume closed a trial (as trials.parquet says it too)."""
_PRUNED_AT = re.compile(r"pruned at step (-?\d+)")
_MISSING = object()


@dataclass
class _Entry:
    """One trial being rebuilt (state by Optuna's name)."""

    number: int
    state: str
    params: dict[str, Any] | None
    value: float | None = None
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    seeds: list[int] = field(default_factory=list)


def rebuild_trials(recipe: Recipe, store: SweepStore) -> list[FrozenTrial]:
    """The sweep's study trials, numbered 0..n-1 as in the sweep dir (see the module doc)."""
    grid = recipe.search.kind == "grid"
    dists = {key: optuna_distribution(spec, grid) for key, spec in recipe.space.items()}
    rows = {int(r["trial"]): r for r in store.read_trials().to_dict("records")}
    objective = _objective_rows(store, recipe.objective.metric)
    runs = store.read_runs()
    started = {int(t) for t in runs["trial"]} | {int(t) for t in objective["trial"].unique()}
    points = recipe.grid_points() if grid else []
    total = max(max([*rows, *started, -1]) + 1, len(points))
    now = dt.datetime.now()
    seeds = [int(s) for s in recipe.search.seeds]

    entries: dict[int, _Entry] = {}
    for n in range(total):
        if n in rows:
            entries[n] = _from_row(n, rows[n], dists, seeds)
        elif n < len(points):  # a grid point never recorded: waiting, or started and lost
            state = "RUNNING" if n in started else "WAITING"
            entries[n] = _Entry(n, state, dict(points[n]), started=now, seeds=seeds)
            entries[n].interrupted = state == "RUNNING"
        else:
            attrs = {ATTR_RECOVERED: NEVER_RECORDED, ATTR_ERROR: NEVER_RECORDED}
            entries[n] = _Entry(n, "FAIL", None, started=now, ended=now, user_attrs=attrs)
    _match_reruns(entries)

    values = intermediate_values(objective, {n: e.seeds for n, e in entries.items()})
    out = []
    for n in range(total):
        e = entries[n]
        inter = values.get(n, {})
        if e.state == "PRUNED":
            match = _PRUNED_AT.search(str(e.user_attrs.get(ATTR_ERROR, "")))
            if match:
                inter = {s: v for s, v in inter.items() if s <= int(match.group(1))}
            e.value = inter[max(inter)] if inter else None
        out.append(_frozen(e, dists, inter, now))
    return out


def _from_row(n: int, row: dict[str, Any], dists: dict[str, Any], seeds: list[int]) -> _Entry:
    state = str(row.get("state") or "FAIL")
    error = _text(row.get("error"))
    params = _params(row, dists)
    listed = row.get("seeds")
    e = _Entry(
        n, state, params, value=_number(row.get("value")),
        started=_local(row.get("started_at")), ended=_local(row.get("ended_at")),
        seeds=[int(s) for s in listed] if listed is not None else seeds,
    )  # fmt: skip
    if error is not None:
        e.user_attrs[ATTR_ERROR] = error
    racing = _text(row.get(ATTR_RACING))
    if racing is not None:
        e.user_attrs[ATTR_RACING] = racing
    e.interrupted = state == "RUNNING" or (
        state == "FAIL" and (error or "").startswith(INTERRUPTED)
    )
    if params is None:  # params lost (a filler recorded by an earlier resume): stays a filler
        e.state, e.interrupted = "FAIL", False
        e.user_attrs.setdefault(ATTR_ERROR, NEVER_RECORDED)
        e.user_attrs[ATTR_RECOVERED] = e.user_attrs[ATTR_ERROR]
    elif state == "COMPLETE" and (e.value is None or not math.isfinite(e.value)):
        e.state = "FAIL"
    return e


def _match_reruns(entries: dict[int, _Entry]) -> None:
    """An interrupted trial is rerun by the next later trial with the same params: it becomes
    FAIL + ``sweeper_recovered`` and the rerun gets ``sweeper_rerun_of``. One without a rerun is
    RUNNING, for the resume to close and rerun."""
    later: dict[tuple[tuple[str, Any], ...], list[int]] = {}
    for n in sorted(entries, reverse=True):
        e = entries[n]
        if e.params is None or e.state == "WAITING":
            continue
        key = tuple(sorted(e.params.items(), key=lambda kv: kv[0]))
        if e.interrupted:
            stack = later.get(key)
            if stack:
                rerun = stack.pop()  # the nearest later trial with these params
                entries[rerun].user_attrs[ATTR_RERUN_OF] = n
                reason = e.user_attrs.get(ATTR_ERROR) or RERUN_REASON
                e.state = "FAIL"
                e.user_attrs[ATTR_RECOVERED] = reason
                e.user_attrs[ATTR_ERROR] = reason
                e.ended = e.ended or e.started
            else:
                e.state, e.ended, e.value = "RUNNING", None, None
                e.user_attrs.pop(ATTR_ERROR, None)
        later.setdefault(key, []).append(n)


def _frozen(
    e: _Entry, dists: dict[str, Any], inter: dict[int, float], now: dt.datetime
) -> FrozenTrial:
    from optuna.trial import FrozenTrial, TrialState

    state = TrialState[e.state]
    waiting = state == TrialState.WAITING
    params = {} if waiting or e.params is None else e.params
    start = None if waiting else (e.started or now)
    end = (e.ended or start or now) if state.is_finished() else None
    return FrozenTrial(
        number=e.number,
        state=state,
        value=e.value if state in (TrialState.COMPLETE, TrialState.PRUNED) else None,
        datetime_start=start,
        datetime_complete=end,
        params=params,
        distributions={k: dists[k] for k in params},
        user_attrs=e.user_attrs,
        system_attrs={"fixed_params": e.params} if waiting else {},
        intermediate_values={} if waiting else inter,
        trial_id=-1,
    )


# --------------------------------------------------------------------------- intermediate values


def _objective_rows(store: SweepStore, metric: str) -> pd.DataFrame:
    """(trial, seed, attempt, step, value) of every attempt's finite objective values."""
    keys = ["trial", "seed", "attempt", "step"]
    traces = store.read_traces(completed_only=False)
    if metric not in traces.columns or traces.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in keys}).assign(value=np.nan)
    out = traces[[*keys, metric]].rename(columns={metric: "value"})
    return out[np.isfinite(out["value"].to_numpy(dtype="float64"))]


def intermediate_values(
    objective: pd.DataFrame, seeds: dict[int, list[int]]
) -> dict[int, dict[int, float]]:
    """Per trial, step -> the mean over its ``seeds`` of the objective at that step, for the
    steps every listed seed reached with a finite value (the first attempt that reached a step
    gives the seed's value there: a retry starts over from step 0)."""
    if objective.empty:
        return {}
    first = objective.sort_values(["trial", "seed", "step", "attempt"], kind="stable")
    first = first.drop_duplicates(["trial", "seed", "step"], keep="first")
    listed = pd.DataFrame(
        [(t, s) for t, ss in seeds.items() for s in dict.fromkeys(ss)], columns=["trial", "seed"]
    )
    if listed.empty:
        return {}
    first = first.merge(listed.astype("int64"), on=["trial", "seed"], how="inner")
    per = first.groupby(["trial", "step"])["value"].agg(["sum", "count"]).reset_index()
    need = per["trial"].map({t: len(set(ss)) for t, ss in seeds.items()})
    per = per[per["count"] == need]
    out: dict[int, dict[int, float]] = {}
    for trial, step, total, count in per.itertuples(index=False):
        out.setdefault(int(trial), {})[int(step)] = float(total) / int(count)
    return out


# --------------------------------------------------------------------------- cell decoding


def _params(row: dict[str, Any], dists: dict[str, Any]) -> dict[str, Any] | None:
    out = {}
    for key, dist in dists.items():
        value = _decode(row.get(key), dist)
        if value is _MISSING:
            return None
        out[key] = value
    return out


def _decode(raw: Any, dist: Any) -> Any:
    """A trials.parquet cell as the value the distribution holds (_MISSING if none fits)."""
    import optuna.distributions as od

    if hasattr(raw, "item") and not isinstance(raw, str):
        raw = raw.item()
    if isinstance(raw, float) and math.isnan(raw):
        raw = None
    if isinstance(dist, od.CategoricalDistribution):
        for choice in dist.choices:
            if _same(choice, raw):
                return choice
        return _MISSING
    if raw is None or isinstance(raw, bool | str):
        return _MISSING
    value = int(raw) if isinstance(dist, od.IntDistribution) else float(raw)
    if isinstance(dist, od.IntDistribution) and value != raw:
        return _MISSING
    return value if dist._contains(dist.to_internal_repr(value)) else _MISSING


def _same(choice: Any, raw: Any) -> bool:
    if choice is None or raw is None:
        return choice is None and raw is None
    if isinstance(raw, str) and not isinstance(choice, str):  # a mixed-type column holds text
        text = ("true" if choice else "false") if isinstance(choice, bool) else None
        return raw == (text or (repr(choice) if isinstance(choice, float) else str(choice)))
    if isinstance(choice, bool) or isinstance(raw, bool):
        return type(choice) is type(raw) and choice == raw
    return bool(choice == raw)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _local(value: Any) -> dt.datetime | None:
    """A timestamp cell as a naive local datetime (what Optuna records), or None."""
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        return None
    out: dt.datetime = ts.to_pydatetime()
    return out.astimezone().replace(tzinfo=None) if out.tzinfo is not None else out
