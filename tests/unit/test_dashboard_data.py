"""The dashboard's data layer: seed bands, final values, Pareto front, grid matrix, ETA,
intervals, importance, and the incremental trace reader against the store's."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sweeper.config.space import GridParam, UniformParam
from sweeper.dashboard.data import (
    SweepData,
    curve_metrics,
    eta_seconds,
    final_values,
    fmt,
    grid_matrix,
    param_importance,
    pareto_front,
    seed_bands,
    trials_done,
    value_interval,
)
from sweeper.rank import rank_sweep
from sweeper.store import SweepStore
from sweeper.traces import TraceCompactor
from tests.unit.test_store import build_sweep, trace_rows

_PART_NAME = re.compile(r"-p\d+\.parquet$")

NAN, INF = math.nan, math.inf


def frame(rows: list[tuple[int, int, int, int, float]], metric: str = "m") -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["trial", "seed", "attempt", "step", metric])


# --------------------------------------------------------------------------- bands


def test_seed_bands_mean_std_min_max_over_the_latest_attempts() -> None:
    traces = frame(
        [
            # trial 0: three seeds at steps 0 and 1; seed 2 unmeasured (NaN) at step 1
            (0, 0, 1, 0, 1.0), (0, 1, 1, 0, 2.0), (0, 2, 1, 0, 6.0),
            (0, 0, 1, 1, 2.0), (0, 1, 1, 1, 4.0), (0, 2, 1, 1, NAN),
            # trial 1 seed 0: attempt 1 was lost (its 100.0 must not count), attempt 2 ran
            (1, 0, 1, 0, 100.0), (1, 0, 2, 0, 0.5), (1, 0, 2, 1, INF),
        ]
    )  # fmt: skip
    bands = seed_bands(traces, "m")
    assert bands[["trial", "step"]].values.tolist() == [[0, 0], [0, 1], [1, 0]]
    b = bands.set_index(["trial", "step"])
    assert b.loc[(0, 0), "mean"] == pytest.approx(3.0)
    assert b.loc[(0, 0), "std"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    assert (b.loc[(0, 0), "min"], b.loc[(0, 0), "max"], b.loc[(0, 0), "n"]) == (1.0, 6.0, 3)
    assert (b.loc[(0, 1), "mean"], b.loc[(0, 1), "n"]) == (3.0, 2)  # the NaN seed skipped
    assert b.loc[(1, 0), "mean"] == 0.5 and b.loc[(1, 0), "n"] == 1  # lost attempt ignored
    assert math.isnan(b.loc[(1, 0), "std"])  # one seed: no spread
    assert seed_bands(traces, "nope").empty


def test_final_values_match_rank_final_entropy(tmp_path: Path) -> None:
    store = build_sweep(tmp_path)
    traces = store.read_traces(completed_only=True)
    finals = final_values(traces, ["entropy", "mean_at_n"])
    ranked = rank_sweep(store).set_index("trial")
    for trial in (0, 1, 2):
        assert finals.loc[trial, "entropy"] == pytest.approx(ranked.loc[trial, "final_entropy"])
    # seed 0 ends at final, seed 1 at final + 0.02 (trace_rows); trial 1's lost attempt ignored
    assert finals.loc[1, "mean_at_n"] == pytest.approx(0.71)
    # the last *finite* value counts: a NaN or inf last step falls back to the step before
    t = frame([(0, 0, 1, 0, 1.0), (0, 0, 1, 1, 2.0), (0, 0, 1, 2, NAN), (0, 0, 1, 3, INF)])
    assert final_values(t, ["m"]).loc[0, "m"] == 2.0


# --------------------------------------------------------------------------- Pareto


def test_pareto_front_maximises_both() -> None:
    x = [1.0, 2.0, 3.0, 2.0, 1.0, 3.0, NAN, 0.5]
    y = [3.0, 2.0, 1.0, 1.5, 1.0, 1.0, 9.0, 3.0]
    # 0 (1,3), 1 (2,2), 2 (3,1) are the front; 3 is dominated by 1, 4 by 0, 7 by 0 (equal y,
    # smaller x); 5 duplicates 2 exactly (not dominated); the NaN point is never on it.
    assert pareto_front(x, y).tolist() == [True, True, True, False, False, True, False, False]
    assert pareto_front([], []).tolist() == []


def brute_force_front(x: np.ndarray, y: np.ndarray) -> list[bool]:
    out = []
    for i in range(len(x)):
        dominated = any(
            x[j] >= x[i] and y[j] >= y[i] and (x[j] > x[i] or y[j] > y[i]) for j in range(len(x))
        )
        out.append(not dominated)
    return out


def test_pareto_front_equals_brute_force_on_random_points() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 6, size=30).astype(float)  # many ties
        y = rng.integers(0, 6, size=30).astype(float)
        assert pareto_front(x, y).tolist() == brute_force_front(x, y)


# --------------------------------------------------------------------------- grid


def test_grid_matrix_places_each_trial_in_its_cell() -> None:
    table = pd.DataFrame(
        {
            "trial": [0, 1, 2],
            "a": [0.1, 0.2, 0.1],
            "b": ["0.28", "0.28", "inf"],  # a mixed-type column comes back as text
            "value": [0.5, 0.6, NAN],
        }
    )
    m = grid_matrix(table, "a", "b", x_values=[0.1, 0.2, 0.3], y_values=[0.28, INF])
    assert (m.xs, m.ys) == (["0.1", "0.2", "0.3"], ["0.28", "inf"])
    assert m.z[0].tolist()[:2] == [0.5, 0.6] and math.isnan(m.z[0][2])
    assert math.isnan(m.z[1][0])  # trial 2 ran there but has no value
    assert m.trials.tolist() == [[0, 1, -1], [2, -1, -1]]
    # without axis values: the table's, numbers sorted numerically
    m2 = grid_matrix(table, "b", "a")
    assert (m2.xs, m2.ys) == (["0.28", "inf"], ["0.1", "0.2"])


# --------------------------------------------------------------------------- progress


def test_eta_from_the_pace_so_far() -> None:
    started = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    status = {
        "state": "running",
        "started_at": started.isoformat(),
        "total_trials": 10,
        "counts": {"COMPLETE": 3, "FAIL": 1, "RUNNING": 1},
        "seeds_per_trial": 2,
        # one of the running trial's two seeds is done with 10 of its 11 rows
        "jobs_running": [{"trial": 4, "seed": 0, "step": 9, "steps": 10}],
    }
    done = 4 + (10 / 11) / 2
    assert trials_done(status) == pytest.approx(done)
    now = started + dt.timedelta(seconds=100)
    assert eta_seconds(status, now) == pytest.approx(100 * (10 - done) / done)
    assert eta_seconds({**status, "state": "finished"}, now) is None
    assert eta_seconds({**status, "total_trials": None}, now) is None
    assert eta_seconds({**status, "counts": {}, "jobs_running": []}, now) is None  # no pace yet


def test_value_interval_prefers_the_bootstrap_columns() -> None:
    assert value_interval({"value": 0.5, "value_std": 0.1}) == (0.4, 0.6, "± std")
    row = {"value": 0.5, "value_std": 0.1, "ci_low": 0.45, "ci_high": 0.58}
    assert value_interval(row) == (0.45, 0.58, "95% CI")
    assert value_interval({"value": 0.5, "value_std": NAN}) is None
    assert value_interval({**row, "ci_low": NAN}) == pytest.approx((0.4, 0.6, "± std"))


def test_fmt() -> None:
    assert [fmt(v) for v in (0.123456, INF, "inf", None, NAN, True, 3, "auto")] == [
        "0.1235", "inf", "inf", "", "", "true", "3", "auto",
    ]  # fmt: skip


# --------------------------------------------------------------------------- importance


def test_importance_finds_the_parameter_that_matters() -> None:
    rng = np.random.default_rng(0)
    n = 40
    table = pd.DataFrame(
        {
            "trial": range(n),
            "x": rng.uniform(0, 1, n),
            "noise": rng.uniform(0, 1, n),
            "fixed": [0.2] * n,  # never varied: no importance to measure
            "value": 0.0,
        }
    )
    table["value"] = -((table["x"] - 0.3) ** 2)
    space = {
        "x": UniformParam(low=0, high=1),
        "noise": UniformParam(low=0, high=1),
        "fixed": GridParam(values=[0.2, 0.4]),
    }
    scores = param_importance(table, space, mode="max")
    assert scores is not None and set(scores) == {"x", "noise"}
    assert scores["x"] > 0.6 > scores["noise"]
    assert sum(scores.values()) == pytest.approx(1.0)
    assert param_importance(table.head(5), space, mode="max") is None  # too few trials
    missing = table.assign(value=NAN)
    assert param_importance(missing, space, mode="max") is None  # no values yet


# --------------------------------------------------------------------------- metrics


def test_curve_metrics_in_display_order_and_only_measured() -> None:
    cols = ["trial", "seed", "attempt", "step", "approx_kl", "pass_at_8", "entropy"]
    df = pd.DataFrame([[0, 0, 1, 0, 0.1, 0.5, 1.0]], columns=cols)
    df["pass_at_1"] = 0.2
    df["clip_low_frac"] = NAN  # never measured: no plot
    df["accuracy"] = 0.3
    assert curve_metrics(df) == ["entropy", "pass_at_1", "pass_at_8", "approx_kl"]
    assert curve_metrics(df, "accuracy")[-1] == "accuracy"  # the objective always shows


# --------------------------------------------------------------------------- the sweep dir


def test_snapshot_traces_equal_the_store_readers(tmp_path: Path) -> None:
    store = build_sweep(tmp_path)
    snap = SweepData(store).snapshot()
    cols = list(snap.traces.columns)
    assert {"entropy", "mean_at_n"} <= set(cols)
    pd.testing.assert_frame_equal(snap.traces, store.read_traces(completed_only=False)[cols])
    pd.testing.assert_frame_equal(snap.completed, store.read_traces(completed_only=True)[cols])
    pd.testing.assert_frame_equal(snap.ranked, rank_sweep(store))
    full = snap.trial_traces([1])
    assert set(full["trial"]) == {1} and sorted(set(full["attempt"])) == [1, 2]


def test_refresh_reads_only_new_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = build_sweep(tmp_path)
    data = SweepData(store, min_interval=0)
    first = data.snapshot()
    reads: list[str] = []
    real = SweepStore.open_input

    def counting(self: SweepStore, rel: str) -> Any:
        reads.append(rel)
        return real(self, rel)

    monkeypatch.setattr(SweepStore, "open_input", counting)
    assert data.snapshot().version == first.version  # nothing changed: same snapshot
    assert not [r for r in reads if r.startswith("traces/")]
    store.append_trace(0, 0, 1, trace_rows(0.9)[:2])  # a new part, as a live sweep streams
    second = data.snapshot()
    assert [r for r in reads if r.startswith("traces/")] == ["traces/t000000-s0-a1-p00002.parquet"]
    assert second.version != first.version
    assert len(second.traces) == len(first.traces)  # the same keys again: the last part wins
    rows = second.traces.query("trial == 0 and seed == 0 and step <= 1")
    assert rows["mean_at_n"].tolist()[0] == pytest.approx(0.9 - 0.2)
    # the attempt ends: its parts become one attempt file, the only file read again
    TraceCompactor(store).recover()  # (what the writer does at an attempt's end, for all)
    reads.clear()
    third = data.snapshot()
    assert reads and all(not _PART_NAME.search(r) for r in reads if r.startswith("traces/"))
    assert third.version != second.version
    pd.testing.assert_frame_equal(third.traces, second.traces)
    assert not [f for f in data.cache.files if _PART_NAME.search(f)]


def test_trial_view_shows_the_samples_the_store_logged(tmp_path: Path) -> None:
    from sweeper.dashboard import views

    store = build_sweep(tmp_path)
    sample = {"prompt": "1+2=", "response": "3", "reward": 1.0, "correct": True}
    store.append_samples(1, 0, 2, 10, [sample, {**sample, "response": "4", "correct": False}])
    store.append_samples(1, 0, 2, 0, [sample])
    store.append_samples(2, 0, 1, 0, [sample])
    snap = SweepData(store).snapshot()
    table = views.trial_view(snap, 1)["samples"]
    assert table["total"] == 3
    assert table["columns"][:3] == ["step", "seed", "attempt"]
    assert [r[0] for r in table["rows"]] == ["10", "10", "0"]  # latest step first
    assert "4" in table["rows"][1] and "false" in table["rows"][1]
    assert views.trial_view(snap, 0)["samples"]["total"] == 0


def test_step_quantiles_of_all_runs_and_of_a_sample() -> None:
    from sweeper.dashboard.data import step_quantiles

    rng = np.random.default_rng(0)
    rows = [
        {"trial": t, "seed": s, "attempt": 1, "step": k, "m": rng.random() if k % 2 == 0 else NAN}
        for t in range(30)
        for s in range(2)
        for k in range(5)
    ]
    df = pd.DataFrame(rows)
    q, used, runs = step_quantiles(df, "m")
    want = df.dropna().groupby("step")["m"].quantile([0.1, 0.5, 0.9]).unstack()
    assert (used, runs) == (60, 60) and q["step"].tolist() == [0, 2, 4]
    assert q[["q10", "q50", "q90"]].to_numpy() == pytest.approx(want.to_numpy())
    q, used, runs = step_quantiles(df, "m", max_runs=10)
    assert (used, runs) == (10, 60) and q["step"].tolist() == [0, 2, 4]
    assert step_quantiles(df, "absent")[0].empty
