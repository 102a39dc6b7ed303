"""Ranking: scopes, seed aggregation, non-finite values, constraints, ordering."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeper.config.recipe import ObjectiveConfig
from sweeper.rank import (
    rank,
    rank_sweep,
    rank_sweep_with_verdict,
    ranking_document,
    scope_value,
    seed_values,
    trial_value,
    verdict,
)
from sweeper.stats import seed_interval
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
    ("agg", "expected"),
    [("mean", 0.4), ("median", 0.3), ("min", 0.2), ("max", 0.7), ("iqm", 0.4)],
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
        "rank", "trial", "state", "p", "value", "ci_low", "ci_high", "value_std", "n_seeds",
        "prob_improvement", "final_entropy", "feasible",
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


def test_iqm_trims_a_quarter_each_side() -> None:
    seeds = [0.1, 0.2, 0.3, 0.9]  # 4 seeds: one cut each end -> mean(0.2, 0.3)
    tr = traces_of({(0, s): {"m": [v]} for s, v in enumerate(seeds)})
    assert trial_value(tr, obj(seed_agg="iqm")) == pytest.approx(0.25)


# Trial 0 leads with 4 seeds, 1 is close behind (a tie with 0 at 0.80, and a seed that never
# measured the metric), 2 is far behind with 2 seeds, 3 has one seed, 4 measured nothing.
SEEDS = {
    0: [0.80, 0.82, 0.84, 0.86],
    1: [0.79, 0.80, 0.85, NAN],
    2: [0.50, 0.52],
    3: [0.60],
}


def seeded_sweep() -> tuple[pd.DataFrame, pd.DataFrame]:
    spec = {(t, s): {"m": [0.0, v] if v == v else [NAN]}  # NaN: a seed that never measured m
            for t, vs in SEEDS.items() for s, v in enumerate(vs)}  # fmt: skip
    spec[(4, 0)] = {"other": [1.0]}
    trials = pd.DataFrame(
        {"trial": [0, 1, 2, 3, 4], "state": ["COMPLETE"] * 5, "p": [INF, 0.2, 0.3, 0.4, 0.5]}
    )
    return trials, traces_of(spec)


def test_intervals_and_probability_of_improvement() -> None:
    trials, tr = seeded_sweep()
    table = rank(trials, tr, obj(), ["p"]).set_index("trial")
    assert table.index.tolist() == [0, 1, 3, 2, 4]
    for t, vs in SEEDS.items():
        low, high = seed_interval(vs, "mean")
        if len(vs) > 1:
            assert (table.loc[t, "ci_low"], table.loc[t, "ci_high"]) == pytest.approx((low, high))
            assert table.loc[t, "ci_low"] <= table.loc[t, "value"] <= table.loc[t, "ci_high"]
    assert (table.loc[2, "ci_low"], table.loc[2, "ci_high"]) == pytest.approx((0.50, 0.52))
    assert table.loc[[3, 4], ["ci_low", "ci_high"]].isna().all().all()  # one seed / none
    # P(trial 0's seed > trial 1's) over 4 x 3 pairs: 0.80 beats 0.79, ties 0.80 (1/2), loses to
    # 0.85; 0.82 and 0.84 beat two, 0.86 all three -> (1.5 + 2 + 2 + 3) / 12
    assert table.loc[1, "prob_improvement"] == pytest.approx(8.5 / 12)
    assert table.loc[2, "prob_improvement"] == 1.0 and table.loc[3, "prob_improvement"] == 1.0
    assert math.isnan(table.loc[0, "prob_improvement"])  # the leader itself
    assert math.isnan(table.loc[4, "prob_improvement"])  # nothing measured
    assert table.loc[1, "n_seeds"] == 3  # the NaN seed is not a seed with a value
    low_first = rank(trials, tr, obj(mode="min"), ["p"]).set_index("trial")
    assert low_first.index[0] == 2  # leader in mode min: P(lower) over pairs
    assert low_first.loc[0, "prob_improvement"] == 1.0


def test_verdict_separated_and_not() -> None:
    trials, tr = seeded_sweep()
    table = rank(trials, tr, obj(), ["p"])
    v = verdict(table, tr, obj())
    assert (v.leader, v.runner_up) == (0, 1)
    assert v.separation is not None and not v.separation.separated
    assert v.text.startswith("Trial 0 leads trial 1 by 0.0167: not separated at 95%")
    # gap 0.0167, variances 6.67e-4 + 1.03e-3: 7.849 x 1.7e-3 / 2.78e-4 = 48.0 -> 49, 46 more
    assert "(p = 0.5, 4 vs 3 seeds); about 46 more seeds per config" in v.text
    # without trial 1 the runner-up is trial 3 (one seed): too few to judge
    v = verdict(rank(trials[trials.trial != 1], tr, obj(), ["p"]), tr, obj())
    assert v.runner_up == 3 and "too few to judge" in v.text
    # trial 0 against trial 2 alone: separated
    only = trials[trials.trial.isin([0, 2])]
    v = verdict(rank(only, tr, obj(), ["p"]), tr, obj())
    assert v.separation is not None and v.separation.separated
    assert v.text.startswith("Trial 0 leads trial 2 by 0.32: separated at 95%")
    v = verdict(rank(trials[trials.trial == 0], tr, obj(), ["p"]), tr, obj())
    assert v.runner_up is None and "nothing to compare" in v.text
    v = verdict(rank(trials.assign(state="RUNNING"), tr, obj(), ["p"]), tr, obj())
    assert v.leader is None and "nothing to rank" in v.text


def test_ranking_document_is_standard_json() -> None:
    trials, tr = seeded_sweep()
    table = rank(trials, tr, obj(), ["p"])
    doc = ranking_document(table, verdict(table, tr, obj()), obj())
    text = json.dumps(doc, allow_nan=False)  # raises on NaN / inf
    back = json.loads(text)
    first = back["trials"][0]
    assert first["trial"] == 0 and first["p"] == "inf" and first["prob_improvement"] is None
    assert {"trial", "p", "value", "ci_low", "ci_high", "n_seeds", "prob_improvement", "state"} <= (
        set(first)
    )
    assert back["verdict"]["leader"] == 0 and back["verdict"]["separated"] is False
    assert back["verdict"]["more_seeds"] == 46 and back["objective"]["metric"] == "m"
    assert back["trials"][-1]["value"] is None  # trial 4: nothing measured


def test_rank_sweep_with_verdict(tmp_path: Path) -> None:
    table, v = rank_sweep_with_verdict(build_sweep(tmp_path))
    # 2 seeds each: the interval is the range of the two seeds
    assert table["ci_low"].tolist()[:3] == pytest.approx([0.70, 0.60, 0.50])
    assert table["ci_high"].tolist()[:3] == pytest.approx([0.72, 0.62, 0.52])
    assert table["prob_improvement"].tolist()[1:3] == [1.0, 1.0]
    # 0.71 vs 0.61 with spread 0.0141 each: Welch t = 7.07 on 2 df, two-sided p = 0.0194
    assert v.separation is not None and v.separation.p_value == pytest.approx(0.0194, abs=3e-4)
    assert v.text.startswith("Trial 1 leads trial 2 by 0.1: separated at 95%")
