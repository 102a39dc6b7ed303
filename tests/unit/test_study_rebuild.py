"""The controller's study: in memory, rebuilt from the sweep dir alone, asked ahead, mirrored.

A small stand-in for the trial book drives :meth:`Search.for_sweep` the way the controller does
(trials.parquet rows, runs.parquet rows, trace parts, per-step means over seeds reported to the
pruner), then a rebuilt study is compared with the live one, trial by trial.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweeper.config.recipe import Recipe
from sweeper.search import Search
from sweeper.search.rebuild import NEVER_RECORDED
from sweeper.store import SweepStore, manifest

optuna = pytest.importorskip("optuna")


def make(tmp_path: Path, recipe: dict[str, Any]) -> tuple[Recipe, SweepStore]:
    text = yaml.safe_dump({"run": {"storage": str(tmp_path / "sweeps")}, **recipe})
    r = Recipe.model_validate(yaml.safe_load(text))
    store = SweepStore.create(r.run.storage, r.name, text, r.resolved(), manifest())
    return r, store


OPTUNA = {
    "name": "o",
    "job": {"kind": "synthetic", "steps": 10},
    "space": {
        "loss.eps_low": {"type": "uniform", "low": 0.05, "high": 0.3},
        "loss.eps_high": [0.2, 0.28, "inf"],
    },
    "search": {"kind": "optuna", "n_trials": 9, "seeds": 2, "max_concurrent": 2,
               "pruner": {"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 0}},
    "objective": {"metric": "mean_at_n", "scope": "last"},
}  # fmt: skip


class Book:
    """What the controller writes for each trial, and what it tells the study."""

    def __init__(self, recipe: Recipe, store: SweepStore, search: Search) -> None:
        self.recipe, self.store, self.search = recipe, store, search
        self.rows: dict[int, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []

    def run(self, number: int, params: dict[str, Any], curve: list[float], fate: str) -> None:
        """Two seeds; seed 1's first attempt dies at step 4 (its values differ), the retry
        runs through. ``fate``: COMPLETE, PRUNED (pruned at step 4), FAIL, RUNNING (left
        running: the controller is killed), LOST (never written to trials.parquet)."""
        steps = list(range(0, len(curve) * 2, 2))
        per: dict[int, dict[int, float]] = {}
        for seed in (0, 1):
            values = [v + 0.01 * seed for v in curve]
            if seed == 1:
                died = [
                    {"step": s, "mean_at_n": v + 0.5}
                    for s, v in zip(steps, values, strict=True)
                    if s <= 4
                ]
                self.store.append_trace(number, seed, 1, died)
                self.runs.append({"trial": number, "seed": seed, "attempt": 1, "state": "FAIL"})
                for r in died:
                    per.setdefault(r["step"], {})[seed] = r["mean_at_n"]
            rows = [{"step": s, "mean_at_n": v} for s, v in zip(steps, values, strict=True)]
            attempt = 2 if seed == 1 else 1
            self.store.append_trace(number, seed, attempt, rows)
            state = "RUNNING" if fate in ("RUNNING", "LOST") else "COMPLETE"
            self.runs.append({"trial": number, "seed": seed, "attempt": attempt, "state": state})
            for r in rows:
                per.setdefault(r["step"], {}).setdefault(seed, r["mean_at_n"])
        last = len(curve) * 2 - 2 if fate != "PRUNED" else 4
        for step in sorted(per):
            if step <= last:
                self.search.report(number, step, sum(per[step].values()) / 2)
        row = {"trial": number, "state": fate, **params, "seeds": [0, 1], "value": math.nan,
               "started_at": "2025-01-01T00:00:00Z", "error": None}  # fmt: skip
        if fate == "COMPLETE":
            row["value"] = (curve[-1] + curve[-1] + 0.01) / 2
            self.search.tell(number, row["value"])
        elif fate == "PRUNED":
            row["error"] = "pruned at step 4 (0.5)"
            self.search.tell(number, None, "PRUNED", error=row["error"])
        elif fate == "FAIL":
            row["error"] = "seed 0: boom"
            self.search.tell(number, None, "FAIL", error=row["error"])
        if fate != "LOST":
            self.rows[number] = row
        self.store.write_trials(list(self.rows.values()), self.recipe.param_keys())
        self.store.write_runs(self.runs)


def comparable(t: dict[str, Any]) -> dict[str, Any]:
    attrs = {k: v for k, v in t["user_attrs"].items() if k in ("error", "racing")}
    inter = {s: pytest.approx(v) for s, v in t["intermediate_values"].items()}
    value = None if t["value"] is None else pytest.approx(t["value"])
    return {"state": t["state"], "params": t["params"], "value": value, "inter": inter, **attrs}


def test_rebuild_matches_the_live_study(tmp_path: Path) -> None:
    recipe, store = make(tmp_path, OPTUNA)
    live = Search.for_sweep(recipe, store)
    book = Book(recipe, store, live)
    fates = ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL", "RUNNING", "LOST"]
    for i, fate in enumerate(fates):
        number, params = live.ask()
        assert number == i
        curve = [0.9, 0.9, 0.9, 0.9] if i < 3 else [0.1, 0.1, 0.1, 0.1]
        book.run(number, params, curve, fate)
    before = {t["number"]: t for t in live.trials()}
    assert before[3]["state"] == "PRUNED" and before[3]["intermediate_values"] == {
        0: pytest.approx(0.355),
        2: pytest.approx(0.355),
        4: pytest.approx(0.355),
    }
    live.close()

    rebuilt = Search.for_sweep(recipe, store, resume=True)
    after = {t["number"]: t for t in rebuilt.trials()}
    assert sorted(after) == list(range(7))  # the asked-ahead trial 7 was never handed out
    for n in range(6):
        assert comparable(after[n]) == comparable(before[n]), n
    assert after[6]["state"] == "FAIL" and after[6]["params"] == {}
    assert after[6]["user_attrs"]["sweeper_recovered"] == NEVER_RECORDED
    # Budget: 6 counted (5 finished, 1 running); the lost one does not count.
    assert rebuilt.n_counted() == 6 and rebuilt.remaining() == 3
    assert rebuilt.recover() == [5]  # the interrupted trial is rerun with its params
    rerun = rebuilt.ask()
    assert rerun is not None and rerun[0] == 7 and rerun[1] == before[5]["params"]
    assert [rebuilt.ask() is not None for _ in range(4)] == [True, True, True, False]
    rebuilt.close()


def test_mirror_holds_every_trial_and_resume_does_not_duplicate(tmp_path: Path) -> None:
    recipe, store = make(tmp_path, OPTUNA)
    live = Search.for_sweep(recipe, store)
    book = Book(recipe, store, live)
    for fate in ["COMPLETE", "COMPLETE", "PRUNED", "RUNNING"]:
        number, params = live.ask()
        book.run(number, params, [0.5, 0.6, 0.7], fate)
    live.close()  # flushes the mirror
    url = f"sqlite:///{store.optuna_sqlite_path()}"
    mirror = optuna.load_study(study_name="o", storage=url)
    got = {t.number: t for t in mirror.get_trials(deepcopy=False)}
    want = {t["number"]: t for t in live.trials() if t["number"] < 4}
    assert sorted(got) == [0, 1, 2, 3]  # the asked-ahead trial 4 is not in the mirror
    for n, t in got.items():
        assert t.state.name == want[n]["state"] and t.params == want[n]["params"]
        assert t.intermediate_values == want[n]["intermediate_values"]
        assert t.value == want[n]["value"]

    rebuilt = Search.for_sweep(recipe, store, resume=True)
    rebuilt.recover()
    number, params = rebuilt.ask()
    rebuilt.tell(number, 0.42)
    rebuilt.close()
    states = [t.state.name for t in optuna.load_study(study_name="o", storage=url).trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "COMPLETE"]


def test_grid_rebuild_hands_out_every_point_once(tmp_path: Path) -> None:
    grid = {**OPTUNA, "name": "g", "space": {"loss.eps_low": [0.1, 0.2, 0.3],
                                             "loss.eps_high": [0.2, "inf"]},
            "search": {"kind": "grid", "seeds": 2}}  # fmt: skip
    recipe, store = make(tmp_path, grid)
    live = Search.for_sweep(recipe, store)
    book = Book(recipe, store, live)
    for fate in ["COMPLETE", "RUNNING", "LOST"]:
        number, params = live.ask()
        book.run(number, params, [0.5, 0.6], fate)
    live.ask()  # handed out, never started, never written
    live.close()

    rebuilt = Search.for_sweep(recipe, store, resume=True)
    states = [t["state"] for t in rebuilt.trials()]
    assert states == ["COMPLETE", "RUNNING", "RUNNING", "WAITING", "WAITING", "WAITING"]
    assert rebuilt.recover() == [1, 2]
    handed = []
    while (item := rebuilt.ask()) is not None:
        handed.append(item)
        rebuilt.tell(item[0], 0.5)
    assert [n for n, _ in handed] == [3, 4, 5, 6, 7]
    done = [t["params"] for t in rebuilt.trials() if t["state"] == "COMPLETE"]
    assert sorted(map(str, done)) == sorted(map(str, recipe.grid_points()))
    assert math.isinf(handed[0][1]["loss.eps_high"])
    rebuilt.close()


def test_rerun_chains_are_matched(tmp_path: Path) -> None:
    recipe, store = make(tmp_path, {**OPTUNA, "search": {"kind": "optuna", "n_trials": 6}})
    p = {"loss.eps_low": 0.1, "loss.eps_high": math.inf}
    q = {"loss.eps_low": 0.2, "loss.eps_high": 0.2}
    again = "interrupted: controller ended; rerun as a new trial"
    rows = [
        {"trial": 0, "state": "FAIL", **p, "error": again},
        {"trial": 1, "state": "FAIL", **q, "error": "interrupted: sweep stopped"},
        {"trial": 2, "state": "FAIL", **p, "error": again},
        {"trial": 3, "state": "COMPLETE", **p, "value": 0.7},
    ]
    store.write_trials(rows, recipe.param_keys())
    search = Search.for_sweep(recipe, store, resume=True)
    t = {x["number"]: x for x in search.trials()}
    assert [t[n]["state"] for n in range(4)] == ["FAIL", "RUNNING", "FAIL", "COMPLETE"]
    assert (
        t[2]["user_attrs"]["sweeper_rerun_of"] == 0 and t[3]["user_attrs"]["sweeper_rerun_of"] == 2
    )
    assert "sweeper_recovered" in t[0]["user_attrs"] and search.n_counted() == 2
    assert search.recover() == [1]
    search.close()


def test_ask_ahead_stays_within_the_budget(tmp_path: Path) -> None:
    recipe, store = make(tmp_path, {**OPTUNA, "search": {"kind": "optuna", "n_trials": 3}})
    search = Search.for_sweep(recipe, store)
    seen = []
    while (item := search.ask()) is not None:
        seen.append(item[0])
        assert search.remaining() == 3 - len(seen)
    assert seen == [0, 1, 2] and len(search.study.trials) == 3  # nothing asked past n_trials
    search.close()
