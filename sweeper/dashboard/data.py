"""The data layer of the dashboard and the report: a thin layer over the ``rank`` and ``store``
readers, with no web or plotting code (tested without a browser).

Two parts:

- pure functions on DataFrames -- seed bands of a metric, final values, the Pareto front, the
  2-D grid matrix, the ETA, the objective's interval, parameter importance (Optuna's
  evaluators on an in-memory study built from the trials) -- and
- :class:`SweepData`, a cached reader of one sweep dir (local or remote, through
  :class:`~sweeper.store.SweepStore`) that hands out immutable :class:`Snapshot` objects.

Trace files never change once they appear (each name is written once, atomically; compaction
replaces files by new ones, :mod:`sweeper.traces`), so :class:`TraceCache` reads each file once
and later refreshes read only the new ones: a dashboard following a live sweep pays for what was
appended or compacted, not for the whole sweep at every poll. A cold read takes only the columns
the first view needs (ranking, final values); a trial's other metric columns are read when its
curves are asked for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sweeper.config.recipe import ObjectiveConfig, Recipe
from sweeper.rank import last_values, objective_of, param_keys_of, rank
from sweeper.store import TRACE_KEYS, SweepStore
from sweeper.store import decode_param as _decode
from sweeper.traces import TraceSet, attempt_mask, combine, is_sorted, latest_attempt_mask

log = logging.getLogger(__name__)

CURVE_METRICS = (
    "entropy",
    "pass_at_*",  # every pass_at_k present, by k
    "mean_at_n",
    "reward_mean",
    "clip_low_frac",
    "clip_high_frac",
    "approx_kl",
    "rollout_logp_diff_mean",
    "rollout_logp_diff_max",
)
"""The metrics plotted against step, in display order (those present in the traces)."""

IMPORTANCE_MIN_TRIALS = 8
"""Trials with a value needed before parameter importance is computed (fewer say little)."""
IMPORTANCE_MAX_TRIALS = 2000
"""Above this many trials importance is computed on a seeded random sample of this many:
building Optuna's in-memory study costs ~1 ms a trial (15 s at 10,000 on a busy VM), and a
random sample keeps both distributions PED-ANOVA compares (the best quantile and all)."""

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")

_PASS_AT = re.compile(r"^pass_at_(\d+)$")


# --------------------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    """A value for display: floats to 4 significant digits, ``inf`` as ``inf``, missing as ``""``."""
    value = _decode(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else None (JSON has no NaN)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


# --------------------------------------------------------------------------- metrics


def pass_at_metrics(columns: Iterable[str]) -> list[str]:
    """The ``pass_at_k`` columns among ``columns``, by k."""
    found = [(int(m.group(1)), c) for c in columns if (m := _PASS_AT.match(c))]
    return [c for _, c in sorted(found)]


def curve_metrics(traces: pd.DataFrame, objective_metric: str | None = None) -> list[str]:
    """The metrics of :data:`CURVE_METRICS` (and the objective's) with at least one finite value
    in ``traces``, in display order."""
    ordered: list[str] = []
    for name in CURVE_METRICS:
        ordered += pass_at_metrics(traces.columns) if name == "pass_at_*" else [name]
    if objective_metric and objective_metric not in ordered:
        ordered.append(objective_metric)
    out = []
    for name in ordered:
        if name in traces.columns:
            values = pd.to_numeric(traces[name], errors="coerce").to_numpy(dtype="float64")
            if np.isfinite(values).any():
                out.append(name)
    return out


def latest_attempts(traces: pd.DataFrame) -> pd.DataFrame:
    """Only the rows of each (trial, seed)'s highest attempt (a retried job's last try)."""
    if traces.empty or "attempt" not in traces.columns:
        return traces
    mask = latest_attempt_mask(traces)
    return traces if mask.all() else traces[mask]


def _finite_rows(traces: pd.DataFrame, metric: str) -> pd.DataFrame:
    values = pd.to_numeric(traces[metric], errors="coerce").astype("float64")
    keep = np.isfinite(values.to_numpy())
    return traces.loc[keep, ["trial", "seed", "step"]].assign(**{metric: values[keep]})


def seed_bands(traces: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (trial, step): ``mean``, ``std`` (sample std over seeds; NaN with one seed), ``min``,
    ``max`` and ``n`` (seeds measured) of ``metric`` over the seeds' latest attempts, at the
    steps where it is finite. Sorted by trial and step."""
    cols = ["trial", "step", "mean", "std", "min", "max", "n"]
    if traces.empty or metric not in traces.columns:
        return pd.DataFrame(columns=cols)
    rows = _finite_rows(latest_attempts(traces), metric)
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = rows.groupby(["trial", "step"], sort=True)[metric].agg(
        mean="mean", std="std", min="min", max="max", n="count"
    )
    return out.reset_index()[cols]


def final_values(traces: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Per trial: for each metric, the mean over seeds of its last finite value (latest attempt
    of each seed) -- rank's ``final_entropy`` definition applied to any metric. Index: trial."""
    metrics = [m for m in dict.fromkeys(metrics) if m in traces.columns]
    if not metrics or traces.empty:
        return pd.DataFrame(index=pd.Index([], name="trial", dtype="int64"), columns=metrics)
    last = last_values(traces, metrics)
    return last.groupby("trial", sort=True)[metrics].mean()


BAND_RUNS = 2000
"""Runs (trial, seed) the all-trials band of a curve is computed from: every run up to this
many, else a seeded random sample of this many (quantiles need no more)."""


def step_quantiles(
    traces: pd.DataFrame, metric: str, max_runs: int = BAND_RUNS, seed: int = 0
) -> tuple[pd.DataFrame, int, int]:
    """Per step, the 10%, 50% and 90% quantiles (columns ``q10``, ``q50``, ``q90``) of
    ``metric`` over the runs' latest attempts, where finite: what the rest of a big sweep does,
    beside the curves of its best trials. ``traces`` sorted by the keys. Returns the frame,
    the runs it is computed from and the runs in ``traces``."""
    empty = pd.DataFrame(columns=["step", "q10", "q50", "q90"])
    if traces.empty or metric not in traces.columns:
        return empty, 0, 0
    latest = latest_attempts(traces)
    t, sd = latest["trial"].to_numpy(), latest["seed"].to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], (t[1:] != t[:-1]) | (sd[1:] != sd[:-1])]))
    runs = len(starts)
    values = pd.to_numeric(latest[metric], errors="coerce").to_numpy(dtype="float64")
    keep = np.isfinite(values)
    used = runs
    if runs > max_runs:
        pick = np.zeros(runs, dtype=bool)
        pick[np.random.default_rng(seed).choice(runs, max_runs, replace=False)] = True
        keep &= np.repeat(pick, np.diff(np.append(starts, len(latest))))
        used = max_runs
    if not keep.any():
        return empty, 0, runs
    frame = pd.DataFrame({"step": latest["step"].to_numpy()[keep], "v": values[keep]})
    q = frame.groupby("step", sort=True)["v"].quantile([0.1, 0.5, 0.9]).unstack()
    q.columns = ["q10", "q50", "q90"]
    return q.reset_index(), used, runs


def pareto_front(x: Iterable[float], y: Iterable[float]) -> np.ndarray:
    """Mask of the points not dominated when both ``x`` and ``y`` are maximised: no other point
    is >= in both and > in one. Non-finite points are never on the front."""
    xs = np.asarray(list(x), dtype="float64")
    ys = np.asarray(list(y), dtype="float64")
    mask = np.zeros(xs.size, dtype=bool)
    ok = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    # Sweep by x descending (ties: y descending); a point is on the front when its y beats every
    # y seen so far -- or equals the last front point exactly (a duplicate is not dominated).
    order = ok[np.lexsort((-ys[ok], -xs[ok]))]
    best_y, last = -math.inf, None
    for i in order:
        if ys[i] > best_y or (last is not None and xs[i] == xs[last] and ys[i] == ys[last]):
            mask[i] = True
            best_y, last = ys[i], i
    return mask


@dataclass(frozen=True)
class GridMatrix:
    """A 2-D grid of one value per cell: ``z[i][j]`` at (``ys[i]``, ``xs[j]``); NaN where no
    trial ran; ``trials[i][j]`` the trial id there (-1 for none)."""

    x_key: str
    y_key: str
    xs: list[str]
    ys: list[str]
    z: np.ndarray
    trials: np.ndarray


def grid_matrix(
    table: pd.DataFrame,
    x_key: str,
    y_key: str,
    value: str = "value",
    x_values: list[Any] | None = None,
    y_values: list[Any] | None = None,
) -> GridMatrix:
    """Arrange ``table`` (one row per trial, e.g. :func:`~sweeper.rank.rank`'s) on the grid of
    ``x_key`` x ``y_key``. Axis values come from ``x_values``/``y_values`` (the recipe's grid
    axes, in order) or else the table's, sorted; cells match on the displayed value, so ``inf``
    and ``"inf"`` are one cell. Several trials in a cell: their mean, and the first trial."""

    def axis(values: list[Any] | None, column: pd.Series) -> list[str]:
        if values is not None:
            return [fmt(v) for v in values]
        present = {fmt(v): _sort_key(_decode(v)) for v in column if fmt(v) != ""}
        return sorted(present, key=lambda k: present[k])

    xs, ys = axis(x_values, table[x_key]), axis(y_values, table[y_key])
    z = np.full((len(ys), len(xs)), np.nan)
    ids = np.full((len(ys), len(xs)), -1, dtype="int64")
    col_of, row_of = {v: j for j, v in enumerate(xs)}, {v: i for i, v in enumerate(ys)}
    sums: dict[tuple[int, int], list[float]] = {}
    for rec in table.to_dict("records"):
        i, j = row_of.get(fmt(rec[y_key])), col_of.get(fmt(rec[x_key]))
        if i is None or j is None:
            continue
        if ids[i, j] < 0:
            ids[i, j] = int(rec["trial"])
        v = finite(rec.get(value))
        if v is not None:
            sums.setdefault((i, j), []).append(v)
    for (i, j), vals in sums.items():
        z[i, j] = float(np.mean(vals))
    return GridMatrix(x_key, y_key, xs, ys, z, ids)


def _sort_key(v: Any) -> tuple[int, float, str]:
    if isinstance(v, bool) or v is None:
        return (1, 0.0, str(v))
    if isinstance(v, int | float):
        return (0, float(v), "")
    return (1, 0.0, str(v))


# --------------------------------------------------------------------------- progress


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    with contextlib.suppress(ValueError, TypeError):
        ts = dt.datetime.fromisoformat(str(value))
        return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
    return None


def trials_done(status: dict[str, Any]) -> float:
    """Finished trials plus the fraction done of the running ones: each running job counts
    ``step / steps`` of one seed of its trial."""
    counts = status.get("counts") or {}
    finished = sum(int(counts.get(s, 0)) for s in FINISHED_STATES)
    seeds = max(int(status.get("seeds_per_trial") or 1), 1)
    partial = 0.0
    for job in status.get("jobs_running") or []:
        steps = max(int(job.get("steps") or 1), 1)
        partial += min(max(int(job.get("step", -1)) + 1, 0) / (steps + 1), 1.0) / seeds
    return finished + partial


def eta_seconds(status: dict[str, Any], now: dt.datetime | None = None) -> float | None:
    """Seconds until a running sweep ends at its pace so far (trials done, with partial credit
    for running jobs, per second since ``started_at``); None when not running or unknowable."""
    if status.get("state") != "running":
        return None
    total = status.get("total_trials")
    started = _parse_time(status.get("started_at"))
    if not total or started is None:
        return None
    done = trials_done(status)
    elapsed = ((now or dt.datetime.now(dt.timezone.utc)) - started).total_seconds()
    if done <= 0 or elapsed <= 0:
        return None
    return max(elapsed * (float(total) - done) / done, 0.0)


def value_interval(row: dict[str, Any]) -> tuple[float, float, str] | None:
    """(low, high, label) around a ranked trial's value: the bootstrap interval when the ranking
    has ``ci_low``/``ci_high``, else value ± the std over seeds; None without either."""
    low, high = finite(row.get("ci_low")), finite(row.get("ci_high"))
    if low is not None and high is not None:
        return low, high, "95% CI"
    value, std = finite(row.get("value")), finite(row.get("value_std"))
    if value is not None and std is not None:
        return value - std, value + std, "± std"
    return None


# --------------------------------------------------------------------------- importance


IMPORTANCE_TOP_TRIALS = 5
"""PED-ANOVA compares the best trials with all: at least this many count as the best."""


def importance_evaluator(n_trials: int) -> tuple[Any, str]:
    """Optuna's PED-ANOVA evaluator for ``n_trials`` trials, and its display name.

    PED-ANOVA needs no extra dependency and stays fast at thousands of trials (Optuna's fANOVA
    needs scikit-learn and took ~1 min at 1,000 trials here). Its target quantile -- the share of
    best trials whose parameter distribution it compares with all trials' -- is Optuna's 0.1,
    raised so that at least :data:`IMPORTANCE_TOP_TRIALS` trials are in it (a top group of one
    or two trials makes the estimate jump between runs; capped at 0.5)."""
    import optuna

    quantile = min(max(0.1, IMPORTANCE_TOP_TRIALS / max(n_trials, 1)), 0.5)
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    return evaluator, f"PED-ANOVA, best {quantile:.0%}"


def param_importance(
    table: pd.DataFrame,
    space: dict[str, Any],
    mode: str,
    grid: bool = False,
    evaluator: Any = None,
    min_trials: int = IMPORTANCE_MIN_TRIALS,
) -> dict[str, float] | None:
    """Importance of each searched parameter for the value, by an Optuna evaluator (default
    :func:`importance_evaluator`'s) on an in-memory study of the trials of ``table`` that have a
    finite value -- the controller and its storage are not needed. ``space``: the recipe's
    parsed specs (their Optuna distributions). None with fewer than ``min_trials`` trials or no
    parameter taking two values. Importances sum to 1."""
    import optuna

    from sweeper.search.distributions import optuna_distribution

    rows = [r for r in table.to_dict("records") if finite(r.get("value")) is not None]
    varied = [k for k in space if k in table.columns and len({fmt(r[k]) for r in rows}) > 1]
    if len(rows) < min_trials or not varied:
        return None
    dists = {k: optuna_distribution(space[k], grid=grid) for k in varied}
    frozen = []
    for r in rows:
        with contextlib.suppress(ValueError, TypeError):  # outside the space: skipped
            frozen.append(
                optuna.trial.create_trial(
                    params={k: _decode(r[k]) for k in varied},
                    distributions=dists,
                    value=float(r["value"]),
                )
            )
    if len(frozen) < min_trials:
        return None
    if evaluator is None:
        evaluator, _ = importance_evaluator(len(frozen))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line per refresh
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        study.add_trials(frozen)
        out = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------- traces


def completed_only(traces: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of attempts whose runs.parquet state is COMPLETE (what ranking may use),
    sorted by the keys."""
    done = runs.loc[runs["state"] == "COMPLETE", ["trial", "seed", "attempt"]].astype("int64")
    keys = set(done.itertuples(index=False, name=None))
    mask = attempt_mask(traces, keys)
    out = traces if mask.all() else traces[mask]
    if not is_sorted(out, TRACE_KEYS):
        out = out.sort_values(list(TRACE_KEYS), kind="stable")
    return out.reset_index(drop=True)


class TraceCache:
    """Reads a sweep's trace files incrementally (:class:`sweeper.traces.TraceSet`): each file
    once, forgetting those a compaction replaced.

    ``summary_column(name)`` picks the metric columns read from every file (the key columns
    always are); :meth:`full` reads every column of the files holding given trials, on demand.
    """

    def __init__(self, store: SweepStore, summary_column: Callable[[str], bool]) -> None:
        self.store = store
        self._summary = TraceSet(store, summary_column)
        self._full: dict[str, pa.Table] = {}
        self._frame: pd.DataFrame | None = None

    @property
    def files(self) -> list[str]:
        """The files the rows come from, in reading order."""
        return self._summary.files

    def refresh(self) -> bool:
        """Pick up new trace files (and drop compacted ones); True when there were changes."""
        changed = self._summary.refresh()
        if changed:
            self._frame = None
        return changed

    def summary(self) -> pd.DataFrame:
        """Every attempt's rows (summary columns), shaped like ``SweepStore.read_traces``."""
        if self._frame is None:
            self._frame = self._summary.table().to_pandas()
        return self._frame

    def full(self, trials: Iterable[int]) -> pd.DataFrame:
        """Every column of the rows of ``trials`` (all attempts)."""
        wanted = {int(t) for t in trials}
        for retry in range(3):
            names = self._summary.files_of(wanted)
            listed = set(self._summary.listing.names)
            self._full = {n: t for n, t in self._full.items() if n in listed}
            missing = [n for n in names if n not in self._full]
            try:
                for name, table in zip(
                    missing, self._summary.read_many(missing, None), strict=True
                ):
                    self._full[name] = table
                break
            except FileNotFoundError:  # compacted since the last refresh: list again
                if retry == 2:
                    raise
                self.refresh()
        mask = pa.array(sorted(wanted), type=pa.int64())
        rows = [
            t.filter(pc.is_in(t["trial"], value_set=mask)) for t in (self._full[n] for n in names)
        ]
        return combine(rows).to_pandas()


# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Snapshot:
    """One consistent view of a sweep dir: what every view is computed from."""

    name: str
    uri: str
    version: str
    """Changes whenever anything the views show changed (clients poll with it)."""
    resolved: dict[str, Any]
    objective: ObjectiveConfig
    param_keys: list[str]
    space: dict[str, Any]
    """The recipe's parsed parameter specs (``sweeper.space``), by key."""
    search_kind: str
    seeds: list[int]
    status: dict[str, Any]
    trials: pd.DataFrame
    runs: pd.DataFrame
    traces: pd.DataFrame
    """Summary columns of every attempt's rows (running and failed ones included)."""
    completed: pd.DataFrame
    """The rows of COMPLETE attempts only (what ranking uses)."""
    ranked: pd.DataFrame
    """:func:`sweeper.rank.rank` of the completed attempts."""
    cache: TraceCache = field(repr=False, compare=False)
    lock: threading.Lock = field(repr=False, compare=False)

    def trial_traces(self, trials: Iterable[int]) -> pd.DataFrame:
        """Every metric column of ``trials``' rows (all attempts), read on demand."""
        with self.lock:
            return self.cache.full(trials)

    def samples(self, trial: int) -> pd.DataFrame:
        """The eval samples one trial logged (``SweepStore.read_samples``; empty if none)."""
        return self.cache.store.read_samples(trial=trial)


def _summary_column_for(objective: ObjectiveConfig) -> Callable[[str], bool]:
    needed = {objective.metric, "entropy", "mean_at_n", *(c.metric for c in objective.constraints)}
    return lambda name: name in needed or _PASS_AT.match(name) is not None


class SweepData:
    """A cached reader of one sweep dir; :meth:`snapshot` is safe to call from many threads.

    Refreshes are at most every ``min_interval`` seconds (0: at every call), and never more
    than a third of the time (a big sweep's refresh can take a second or two: the server stays responsive); a
    refresh lists traces/, reads the new part files, status.json and the two tables, and
    recomputes the ranking only when one of them changed."""

    def __init__(self, store: SweepStore, min_interval: float = 1.0) -> None:
        self.store = store
        self.min_interval = min_interval
        resolved = store.read_resolved()
        self.resolved = resolved
        self.objective = objective_of(store)
        recipe = _recipe_or_none(resolved)
        self.space: dict[str, Any] = dict(recipe.space) if recipe else {}
        self.search_kind = recipe.search.kind if recipe else "grid"
        self.seeds = list(recipe.search.seeds) if recipe else []
        self.cache = TraceCache(store, _summary_column_for(self.objective))
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._checked = -math.inf
        self._cost = 0.0  # seconds the last refresh took

    def snapshot(self) -> Snapshot:
        """The current snapshot (refreshed from the sweep dir when due)."""
        with self._lock:
            wait = max(self.min_interval, 2 * self._cost) if self.min_interval > 0 else 0.0
            if self._snap is not None and time.monotonic() - self._checked < wait:
                return self._snap
            start = time.monotonic()
            self._refresh()
            self._checked = time.monotonic()
            self._cost = self._checked - start
            assert self._snap is not None
            return self._snap

    def _refresh(self) -> None:
        status = self.store.read_status()
        self.cache.refresh()
        fingerprint = (
            status.get("updated_at"),
            hashlib.sha1("\n".join(self.cache.files).encode()).hexdigest(),
            self.store.tables_digest(),  # trials/runs: base tables and their log
        )
        if self._snap is not None and fingerprint == self._fingerprint:
            return
        trials, runs = self.store.read_trials(), self.store.read_runs()
        traces = self.cache.summary()
        done = completed_only(traces, runs)
        keys = param_keys_of(self.store, trials)
        ranked = rank(trials, done, self.objective, keys)
        # The ETA needs seeds per trial, which status.json does not carry.
        status = {**status, "seeds_per_trial": len(self.seeds) or 1}
        self._snap = Snapshot(
            name=self.store.name,
            uri=self.store.uri,
            version=hashlib.sha1(repr(fingerprint).encode()).hexdigest()[:16],
            resolved=self.resolved,
            objective=self.objective,
            param_keys=keys,
            space=self.space,
            search_kind=self.search_kind,
            seeds=self.seeds,
            status=status,
            trials=trials,
            runs=runs,
            traces=traces,
            completed=done,
            ranked=ranked,
            cache=self.cache,
            lock=self._lock,
        )
        self._fingerprint = fingerprint


def _recipe_or_none(resolved: dict[str, Any]) -> Recipe | None:
    """The resolved recipe as a Recipe (None for a sweep dir written without a full recipe)."""
    try:
        return Recipe.model_validate(resolved)
    except Exception as err:  # hand-made or older sweep dirs: the views fall back to the tables
        log.debug("recipe.resolved.json does not validate: %s", err)
        return None
