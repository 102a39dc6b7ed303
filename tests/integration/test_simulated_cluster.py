"""The controller's real code (scheduling, trial book, writer, store, Optuna) driven through the
pool seam by a simulated cluster on a discrete-event clock, and the scale benchmark at small
size (``bench/controller_scale.py``)."""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import yaml

from sweeper.config.loader import load_recipe
from sweeper.controller import Controller, write_control
from sweeper.controller.simulated import SimClock, SimulatedPool
from sweeper.store import SweepStore, manifest
from sweeper.synthetic import run_synthetic

BENCH = Path(__file__).resolve().parents[2] / "bench" / "controller_scale.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("controller_scale", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["controller_scale"] = module
    spec.loader.exec_module(module)
    return module


def expected_value(recipe, params: dict, seeds: list[int]) -> float:
    """The objective (mean_at_n at the last step, mean over seeds) computed from the job."""
    job = recipe.job_for(params).model_dump(mode="json")
    return sum(list(run_synthetic(job, s))[-1]["mean_at_n"] for s in seeds) / len(seeds)


def check_complete_sweep(store: SweepStore, recipe, n_trials: int) -> None:
    """Every trial COMPLETE with the right value; one COMPLETE attempt per seed whose trace
    holds every step once."""
    seeds = list(recipe.search.seeds)
    trials = store.read_trials()
    assert len(trials) == n_trials and set(trials["state"]) == {"COMPLETE"}
    keys = recipe.param_keys()
    for row in trials.to_dict("records"):
        want = expected_value(recipe, {k: row[k] for k in keys}, seeds)
        assert math.isclose(row["value"], want, rel_tol=1e-9), row
    runs = store.read_runs()
    done = runs[runs["state"] == "COMPLETE"]
    assert len(done) == n_trials * len(seeds)
    assert not done.duplicated(["trial", "seed"]).any()
    traces = store.read_traces(completed_only=True)
    per_job = traces.groupby(["trial", "seed"])["step"].agg(["count", "nunique", "max"])
    assert len(per_job) == n_trials * len(seeds)
    steps = recipe.job.steps
    assert (per_job["count"] == steps + 1).all() and (per_job["nunique"] == steps + 1).all()
    assert (per_job["max"] == steps).all()


def test_scale_bench_small_drives_the_real_controller(tmp_path: Path, capsys) -> None:
    bench = load_bench()
    # 120 trials x 3 seeds on 4 nodes x 8 GPUs: eleven waves of jobs, 21 rows each.
    c = bench.SimConfig(
        trials=120, steps=20, eval_every=5, nodes=4, step_seconds=(0.05, 0.15), window=30
    )
    r = bench.run_simulated(c, str(tmp_path))
    assert r.status["state"] == "finished" and r.status["counts"]["COMPLETE"] == 120
    store = SweepStore(r.sweep_dir)
    check_complete_sweep(store, r.recipe, 120)
    # Every simulated GPU ran jobs; the clock moved by at least the jobs' own time per GPU.
    runs = store.read_runs()
    assert runs["worker"].nunique() == 32 and runs["node"].nunique() == 4
    assert r.sim_seconds >= 360 / 32 * (2.0 + 21 * 0.05)
    assert r.completed_attempts == 360 and r.rank_rc == 0
    # compacted: at most one trace file per completed attempt (segments of attempt files)
    assert 0 < r.trace_files <= r.completed_attempts and r.files > r.trace_files
    assert len(r.ask_seconds) == 121  # the last ask says the search is exhausted
    assert r.snapshots[-1].finished == 120 and r.snapshots[-1].optuna_cpu > 0
    assert r.first[0] < r.first[1] <= r.last[0] < r.last[1] <= 120
    bench.report_simulated(r)
    out = capsys.readouterr().out
    assert sum(line.lstrip().startswith(("PASS", "FAIL")) for line in out.splitlines()) == 4


def sim_recipe(tmp_path: Path, **search) -> str:
    recipe = {
        "name": "sim",
        "job": {"kind": "synthetic", "steps": 20, "eval": {"every": 5, "ks": [1]}},
        "space": {"loss.eps_low": {"type": "uniform", "low": 0.05, "high": 0.3}},
        "search": {
            "kind": "optuna",
            "sampler": "random",
            "n_trials": 30,
            "seeds": 2,
            "max_concurrent": 16,
            **search,
        },
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"storage": str(tmp_path / "sweeps"), "max_retries": 20},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def simulated(path: str, **pool_kw) -> tuple[Controller, SweepStore, SimulatedPool, object]:
    recipe, text = load_recipe(path)
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    clock = SimClock()
    pool = SimulatedPool(clock, nodes=2, gpus_per_node=8, step_seconds=(0.1, 0.3), **pool_kw)
    return Controller(recipe, store, pool=pool, clock=clock), store, pool, recipe


def test_dead_workers_are_retried_and_nothing_is_duplicated(tmp_path: Path) -> None:
    controller, store, pool, recipe = simulated(sim_recipe(tmp_path), die_prob=0.3, seed=1)
    status = controller.run()
    assert status["state"] == "finished" and status["counts"]["COMPLETE"] == 30
    runs = store.read_runs()
    dead = runs[runs["error"].fillna("").str.startswith("worker died: SimulatedNodeLoss")]
    assert pool.died == len(dead) > 0 and set(dead["state"]) == {"FAIL"}
    for r in dead.itertuples():  # each retried with the next attempt number
        later = runs[(runs["trial"] == r.trial) & (runs["seed"] == r.seed)]
        assert (later["attempt"] == r.attempt + 1).any()
    check_complete_sweep(store, recipe, 30)
    assert set(runs["node"]) <= {"node-00", "node-01"}


def test_pruned_trials_stop_their_simulated_jobs(tmp_path: Path) -> None:
    pruner = {"kind": "median", "n_startup_trials": 4, "n_warmup_steps": 5}
    path = sim_recipe(tmp_path, seeds=1, max_concurrent=4, pruner=pruner)
    controller, store, _, _ = simulated(path)
    status = controller.run()
    assert status["counts"]["PRUNED"] >= 1
    traces = store.read_traces(completed_only=False)
    runs = store.read_runs()
    pruned = store.read_trials().query("state == 'PRUNED'")
    cut_short = 0
    for number, error in zip(pruned["trial"], pruned["error"], strict=True):
        at = int(re.search(r"pruned at step (\d+)", error).group(1))
        last = traces[traces["trial"] == number]["step"].max()
        # Stopped after the batch of rows that held the prune step (<= 0.5 s of rows) + one row.
        assert at <= last <= min(20, at + 6)
        cut_short += last < 20
        assert set(runs[runs["trial"] == number]["state"]) == {"PRUNED"}
    assert cut_short >= 1


def test_a_stop_request_is_seen_on_the_simulated_clock(tmp_path: Path) -> None:
    controller, store, _, _ = simulated(sim_recipe(tmp_path, n_trials=200))
    asked: list[bool] = []

    def on_update(status: dict) -> None:
        if status["counts"]["COMPLETE"] >= 10 and not asked:
            write_control(store, stop=True)
            asked.append(True)

    controller.on_update = on_update
    status = controller.run()
    assert status["state"] == "stopped"
    trials = store.read_trials()
    assert 10 <= status["counts"]["COMPLETE"] < 200 and len(trials) < 200
    unfinished = trials[trials["state"] == "FAIL"]
    assert len(unfinished) >= 1
    assert unfinished["error"].str.contains("sweep stopped").all()
    assert not (store.read_runs()["state"] == "RUNNING").any()
