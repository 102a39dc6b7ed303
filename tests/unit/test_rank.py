"""Ranking: scopes, seed aggregation, non-finite values, constraints, ordering."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.config.recipe import ObjectiveConfig
from sweeper.rank import rank, rank_sweep, scope_value, seed_values, trial_value
from tests.unit.test_store import build_sweep

NAN, INF = math.nan, math.inf


def traces_of(spec: dict[tuple[int, int], dict[str, list[float]]]) -> pd.DataFrame:
    """{(trial, seed): {metric: values by step}} -> a traces frame (attempt 1)."""
    rows = []
    for (trial, seed), metrics in spec.items():
        n = max(len(v) for v in metrics.values())
        for step in range(n):
            row = {"trial": trial, "seed": seed, "attempt": 1, "step": step}
            for m, values in metrics.items():
                row[m] = values[step] if step < len(values) else NAN
            rows.append(row)
    return pd.DataFrame(rows)


def obj(**kw: object) -> ObjectiveConfig:
    return ObjectiveConfig.model_validate({"metric": "m", **kw})


# metric with a NaN (unmeasured step) and an inf (non-finite, dropped)
M = [0.1, NAN, 0.3, INF, 0.2]


@pytest.mark.parametrize(
    ("scope", "mode", "expected"),
    [
        ("last", "max", 0.2),
        ("avg", "max", 0.2),
        ("best", "max", 0.3),
        ("best", "min", 0.1),
        ("last-2-avg", "max", 0.25),
        ("last-1-avg", "max", 0.2),
        ("last-10-avg", "max", 0.2),
    ],
)
def test_scopes_by_hand(scope: str, mode: str, expected: float) -> None:
    df = seed_values(traces_of({(0, 0): {"m": M}}), obj(scope=scope, mode=mode))
    assert df["value"].tolist() == [pytest.approx(expected)]
    assert scope_value(np.array([0.1, 0.3, 0.2]), scope, mode) == pytest.approx(expected)


def test_unmeasured_and_all_nonfinite_give_nan() -> None:
    df = seed_values(traces_of({(0, 0): {"m": [NAN, INF, -INF]}, (1, 0): {"x": [1.0]}}), obj())
    assert df["value"].isna().all()
    assert math.isnan(trial_value(traces_of({(0, 0): {"m": [NAN]}}), obj()))
    assert math.isnan(trial_value(pd.DataFrame(), obj()))


@pytest.mark.parametrize(
    ("agg", "expected"), [("mean", 0.4), ("median", 0.3), ("min", 0.2), ("max", 0.7)]
)
def test_seed_aggregation(agg: str, expected: float) -> None:
    tr = traces_of(
        {
            (0, 0): {"m": [0.0, 0.2]},
            (0, 1): {"m": [0.0, 0.3]},
            (0, 2): {"m": [0.0, 0.7]},
            (0, 3): {"m": [NAN, NAN]},
        }
    )
    assert trial_value(tr, obj(seed_agg=agg)) == pytest.approx(expected)
    table = rank(pd.DataFrame({"trial": [0], "state": ["COMPLETE"]}), tr, obj(seed_agg=agg), [])
    assert table["value"][0] == pytest.approx(expected)
    assert table["n_seeds"][0] == 3  # seed 3 never measured the metric
    assert table["value_std"][0] == pytest.approx(np.std([0.2, 0.3, 0.7], ddof=1))


def test_latest_attempt_wins() -> None:
    tr = traces_of({(0, 0): {"m": [0.9]}})
    retry = tr.assign(attempt=2, m=0.1)
    assert trial_value(pd.concat([tr, retry]), obj()) == pytest.approx(0.1)


def test_entropy_min_ratio_constraint_per_seed() -> None:
    tr = traces_of(
        {
            (0, 0): {"m": [0.5, 0.9], "entropy": [1.0, 0.4]},  # ratio 0.4 < 0.5: infeasible
            (0, 1): {"m": [0.5, 0.8], "entropy": [1.0, 0.6]},
            (1, 0): {"m": [0.5, 0.6], "entropy": [1.0, NAN, 0.7]},  # last measured 0.7
            (1, 1): {"m": [0.5, 0.6], "entropy": [2.0, 1.2]},
        }
    )
    o = obj(constraints=[{"metric": "entropy", "min_ratio": 0.5}])
    per_seed = seed_values(tr, o)
    assert per_seed["feasible"].tolist() == [False, True, True, True]
    assert per_seed["final_entropy"].tolist() == pytest.approx([0.4, 0.6, 0.7, 1.2])
    trials = pd.DataFrame({"trial": [0, 1], "state": ["COMPLETE", "COMPLETE"]})
    table = rank(trials, tr, o, [])
    # trial 0 has the higher value (0.85 vs 0.6) but one infeasible seed: it ranks second
    assert table["trial"].tolist() == [1, 0]
    assert table["feasible"].tolist() == [True, False]
    assert table["final_entropy"].tolist() == pytest.approx([0.95, 0.5])
    assert table["value"].tolist() == pytest.approx([0.6, 0.85])


def test_min_max_constraints_and_unmeasured_metric() -> None:
    tr = traces_of({(0, 0): {"m": [0.5], "len": [3.0, 9.0]}, (1, 0): {"m": [0.4], "len": [5.0]}})
    o = obj(constraints=[{"metric": "len", "min": 4.0, "max": 8.0}])
    assert seed_values(tr, o)["feasible"].tolist() == [False, True]
    o2 = obj(constraints=[{"metric": "missing", "min": 0.0}])
    assert seed_values(tr, o2)["feasible"].tolist() == [False, False]


def test_mode_min_and_state_placement() -> None:
    trials = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3, 4, 5, 6],
            "state": ["COMPLETE", "COMPLETE", "PRUNED", "COMPLETE", "FAIL", "RUNNING", "WAITING"],
            "p": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
        }
    )
    tr = traces_of(
        {
            (0, 0): {"m": [0.5]},
            (1, 0): {"m": [0.2]},
            (2, 0): {"m": [0.05]},  # pruned trial with (completed-looking) data: still after
            (5, 0): {"m": [0.01]},  # running trial, one seed done
        }
    )  # trial 3 COMPLETE but nothing measured
    table = rank(trials, tr, obj(mode="min"), ["p"])
    assert table["trial"].tolist() == [1, 0, 3, 5, 2, 4, 6]
    assert table["rank"].tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert list(table.columns) == [
        "rank", "trial", "state", "p", "value", "value_std", "n_seeds", "final_entropy",
        "feasible",
    ]  # fmt: skip
    assert table.loc[table.trial == 3, "n_seeds"].item() == 0
    assert math.isnan(table.loc[table.trial == 3, "value"].item())
    table_max = rank(trials, tr, obj(mode="max"), ["p"])
    assert table_max["trial"].tolist()[:3] == [0, 1, 3]


def test_empty_inputs() -> None:
    empty = rank(pd.DataFrame({"trial": [], "state": []}), pd.DataFrame(), obj(), ["p"])
    assert empty.empty and list(empty.columns)[:3] == ["rank", "trial", "state"]


def test_rank_sweep_uses_completed_attempts_only(tmp_path: Path) -> None:
    store = build_sweep(tmp_path)
    table = rank_sweep(store)  # objective from the recipe: mean_at_n, max, last, mean
    # trial 1: seed 0 (attempt 2) 0.70, seed 1 0.72; trial 2: 0.60/0.62; trial 0: 0.50/0.52.
    # The FAILed trial 3 (0.99 in its failed attempts) is last with no value.
    assert table["trial"].tolist() == [1, 2, 0, 3]
    assert table["value"].tolist()[:3] == pytest.approx([0.71, 0.61, 0.51])
    assert math.isnan(table["value"][3]) and table["state"][3] == "FAIL"
    assert table["n_seeds"].tolist() == [2, 2, 2, 0]
    assert table["final_entropy"].tolist()[:3] == pytest.approx([0.8, 0.8, 0.8])
    assert math.isinf(table["loss.eps_high"][0]) and table["loss.eps_low"][0] == 0.1
    best = rank_sweep(store, ObjectiveConfig(metric="mean_at_n", scope="best", mode="min"))
    assert best["value"].tolist()[:3] == pytest.approx([0.31, 0.41, 0.51])
