"""The controller on a private local Ray with the synthetic job: grids, Optuna + pruning, job
errors, worker death and retries, stop and resume."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sweeper.config.loader import load_recipe
from sweeper.controller import Controller
from sweeper.controller.pool import WorkerPool
from sweeper.rank import rank_sweep
from sweeper.store import SweepStore, manifest
from sweeper.sweeps import request_stop, resume_sweep

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory):
    temp = tmp_path_factory.mktemp("ray")
    ray.init(
        address="local",
        _temp_dir=str(temp),
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=4,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def synthetic_recipe(tmp_path: Path, **sections) -> str:
    recipe = {
        "name": "syn",
        "job": {"kind": "synthetic", "steps": 10, "eval": {"every": 2, "ks": [1, 4], "samples": 4}},
        "space": {"loss.eps_low": [0.05, 0.15], "loss.eps_high": [0.2, 0.3]},
        "search": {"kind": "grid", "seeds": 2, "max_concurrent": 4},
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"storage": str(tmp_path / "sweeps"), "max_retries": 2},
    }
    for key, value in sections.items():
        if key != "space" and isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def start(path: str) -> tuple[Controller, SweepStore]:
    recipe, text = load_recipe(path)
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    return Controller(recipe, store), store


def test_grid_runs_every_point_and_seed(local_ray, tmp_path: Path) -> None:
    controller, store = start(synthetic_recipe(tmp_path))
    status = controller.run()
    assert status["state"] == "finished"
    assert status["counts"]["COMPLETE"] == 4
    trials = store.read_trials()
    assert sorted(trials["state"]) == ["COMPLETE"] * 4
    assert {"loss.eps_low", "loss.eps_high", "value"} <= set(trials.columns)
    runs = store.read_runs()
    assert len(runs) == 8 and set(runs["state"]) == {"COMPLETE"}
    traces = store.read_traces()
    assert len(traces) == 4 * 2 * 11  # trials x seeds x (steps + 1)
    assert not traces.duplicated(["trial", "seed", "attempt", "step"]).any()
    # every ended attempt compacted: 8 attempt files, no part left (16 would make a segment)
    assert store.trace_files() == sorted(
        f"t{t:06d}-s{s}-a1.parquet" for t in range(4) for s in (0, 1)
    )
    ranked = rank_sweep(store)
    best = ranked.iloc[0]
    # The synthetic landscape peaks at eps_low 0.15, eps_high 0.3.
    assert (best["loss.eps_low"], best["loss.eps_high"]) == (0.15, 0.3)
    on_disk = store.read_status()
    assert on_disk["state"] == "finished" and on_disk["best"]["trial"] == int(best["trial"])


def test_optuna_with_pruner_prunes(local_ray, tmp_path: Path) -> None:
    path = synthetic_recipe(
        tmp_path,
        job={
            "kind": "synthetic",
            "steps": 20,
            "step_seconds": 0.05,
            "noise": 0.0,
            "eval": {"every": 2, "ks": [1], "samples": 4},
        },
        space={"loss.eps_low": {"type": "uniform", "low": 0.0, "high": 1.0}},
        search={
            "kind": "optuna",
            "sampler": "random",
            "n_trials": 10,
            "seeds": 1,
            "max_concurrent": 1,
            "pruner": {"kind": "median", "n_startup_trials": 2, "n_warmup_steps": 2},
        },
    )
    controller, store = start(path)
    status = controller.run()
    trials = store.read_trials()
    assert len(trials) == 10
    assert status["counts"]["PRUNED"] >= 1
    pruned = trials[trials["state"] == "PRUNED"]
    traces = store.read_traces(completed_only=False)
    for number in pruned["trial"]:
        steps = traces[traces["trial"] == number]["step"]
        assert steps.max() < 20  # stopped early, within a step or two of the prune
    assert store.read_runs().query("state == 'PRUNED'").shape[0] == len(pruned)


def test_job_error_fails_trial_and_sweep_goes_on(local_ray, tmp_path: Path) -> None:
    path = synthetic_recipe(
        tmp_path, space={"fail_at_step": [None, 3]}, search={"kind": "grid", "seeds": 1}
    )
    controller, store = start(path)
    status = controller.run()
    assert status["state"] == "finished"
    trials = store.read_trials().set_index("fail_at_step", drop=False)
    failed = trials[trials["state"] == "FAIL"]
    assert len(failed) == 1 and "synthetic failure at step 3" in failed.iloc[0]["error"]
    assert (trials["state"] == "COMPLETE").sum() == 1
    runs = store.read_runs()
    assert sorted(runs["state"]) == ["COMPLETE", "FAIL"]


def test_killed_worker_is_retried_with_new_attempt(local_ray, tmp_path: Path) -> None:
    path = synthetic_recipe(
        tmp_path,
        job={"kind": "synthetic", "steps": 30, "step_seconds": 0.1},
        space={"loss.eps_low": [0.1]},
        search={"kind": "grid", "seeds": 1},
    )
    controller, store = start(path)
    killed: list[int] = []

    def kill_first_worker() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            time.sleep(0.3)
            try:
                runs = store.read_runs()
            except Exception:
                continue
            running = runs[runs["state"] == "RUNNING"] if len(runs) else runs
            for worker in running.get("worker", []):
                pid = int(str(worker).rsplit(":", 1)[1])
                time.sleep(0.5)  # let it stream a few rows first
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return

    killer = threading.Thread(target=kill_first_worker)
    killer.start()
    status = controller.run()
    killer.join()
    assert killed, "no worker was found to kill"
    assert status["counts"]["COMPLETE"] == 1
    runs = store.read_runs().sort_values("attempt")
    assert list(runs["attempt"]) == [1, 2]
    assert list(runs["state"]) == ["FAIL", "COMPLETE"]
    assert "worker died" in runs.iloc[0]["error"]
    traces = store.read_traces()  # completed attempts only: exactly one full trace
    assert set(traces["attempt"]) == {2} and list(traces["step"]) == list(range(31))


def test_stop_then_resume_finishes_without_duplicates(local_ray, tmp_path: Path) -> None:
    path = synthetic_recipe(
        tmp_path,
        job={"kind": "synthetic", "steps": 20, "step_seconds": 0.1},
        search={"kind": "grid", "seeds": 1, "max_concurrent": 2},
    )
    controller, store = start(path)

    def stop_soon() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.3)
            status = store.read_status() or {}
            if status.get("counts", {}).get("COMPLETE", 0) >= 1:
                request_stop(store.uri)
                return

    stopper = threading.Thread(target=stop_soon)
    stopper.start()
    status = controller.run()
    stopper.join()
    assert status["state"] == "stopped"
    assert 1 <= status["counts"]["COMPLETE"] < 4
    done_before = set(store.read_trials().query("state == 'COMPLETE'")["trial"])

    final = resume_sweep(store.uri)
    assert final["state"] == "finished"
    trials = store.read_trials()
    complete = trials[trials["state"] == "COMPLETE"]
    # Every grid point completed exactly once; finished trials were kept, not rerun.
    points = complete[["loss.eps_low", "loss.eps_high"]].apply(tuple, axis=1)
    assert len(points) == 4 and points.is_unique
    assert done_before <= set(complete["trial"])
    traces = store.read_traces()
    assert not traces.duplicated(["trial", "seed", "step"]).any()
    assert len(traces) == 4 * 21
    assert set(traces["trial"]) == set(complete["trial"])
    assert isinstance(trials, pd.DataFrame)


def test_job_that_fits_no_node(local_ray, tmp_path: Path) -> None:
    from sweeper.errors import InputError

    path = synthetic_recipe(tmp_path, run={"resources": {"num_gpus": 1}})
    controller, store = start(path)
    # The embedded Ray cannot grow: a GPU job on a CPU-only Ray is bad input, said at once.
    with pytest.raises(InputError, match="no node can hold one job's resources"):
        controller.run()
    assert store.read_trials().empty  # refused before any trial started
    # A cluster that may autoscale gets one pending worker, which asks it for a node.
    recipe, _ = load_recipe(path)
    elastic = WorkerPool(recipe.run.resources, recipe.search.max_concurrent, fixed_size=False)
    assert elastic.capacity() == 1


def test_resume_finishes_an_unmeasured_objective_as_fail_in_both_places(
    local_ray, tmp_path: Path
) -> None:
    """A controller killed after every seed of two trials finished, before telling Optuna: one
    trial's objective was measured, the other's never was. Resume finishes both through the one
    finish path, so trials.parquet and the study agree on every trial's state and value."""
    from sweeper.search import Search, storage_url

    path = synthetic_recipe(tmp_path, space={"loss.eps_low": [0.1, 0.2]})
    recipe, text = load_recipe(path)
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    search = Search.create_or_load(recipe, storage_url(recipe, store), recipe.name)
    asked = [search.ask(), search.ask()]
    search.close()
    runs, trials = [], []
    for (number, params), measured in zip(asked, (True, False), strict=True):
        trials.append({"trial": number, "state": "RUNNING", **params, "seeds": [0, 1]})
        for seed in (0, 1):
            value = 0.5 + 0.1 * seed if measured else float("nan")
            store.append_trace(number, seed, 1, [{"step": s, "mean_at_n": value} for s in range(3)])
            runs.append({"trial": number, "seed": seed, "attempt": 1, "state": "COMPLETE"})
    store.write_runs(runs)
    store.write_trials(trials, recipe.param_keys())

    Controller(recipe, store).run(resume=True)

    on_disk = store.read_trials().set_index("trial")
    study = {t["number"]: t for t in Search.create_or_load(
        recipe, storage_url(recipe, store), recipe.name
    ).trials()}  # fmt: skip
    assert set(on_disk.index) == set(study)
    for number, row in on_disk.iterrows():
        assert row["state"] == study[number]["state"]
        told = study[number]["value"]
        assert (math.isnan(row["value"]) and told is None) or row["value"] == pytest.approx(told)
    (good, _), (bad, _) = asked
    assert on_disk.loc[good, "state"] == "COMPLETE"
    assert on_disk.loc[good, "value"] == pytest.approx(0.55)
    assert on_disk.loc[bad, "state"] == "FAIL"
    assert "never measured" in on_disk.loc[bad, "error"]


def test_racing_spends_seeds_where_the_ranking_is_close(local_ray, tmp_path: Path) -> None:
    """A raced grid: every config starts with 2 seeds; the two far behind (true accuracy 0.51)
    are dropped there, marked ``dropped`` (COMPLETE, not FAIL); the two at the top (0.836 and
    0.838, far closer than the seed noise) race on to ``max_seeds``. trials.parquet, runs.parquet,
    the study and the ranking agree on all of it."""
    from sweeper.search import Search, storage_url

    path = synthetic_recipe(
        tmp_path,
        job={"kind": "synthetic", "steps": 4, "noise": 0.0, "seed_noise": 0.02,
             "eval": {"every": 2, "ks": [1], "samples": 4}},
        space={"loss.eps_low": [0.02, 0.15], "loss.eps_high": [0.28, 0.3]},
        search={"kind": "grid", "seeds": 6, "max_concurrent": 2,
                "racing": {"min_seeds": 2, "max_seeds": 5, "confidence": 0.9}},
    )  # fmt: skip
    controller, store = start(path)
    status = controller.run()
    assert status["state"] == "finished" and status["counts"]["COMPLETE"] == 4
    trials = store.read_trials().set_index("trial")
    spent = trials["seeds"].apply(len)
    far = trials["loss.eps_low"] == 0.02
    assert (trials.loc[far, "racing"] == "dropped").all() and (spent[far] == 2).all()
    assert (trials.loc[~far, "racing"] == "max_seeds").all() and (spent[~far] == 5).all()
    assert (trials["state"] == "COMPLETE").all()
    assert [list(s) for s in trials.loc[~far, "seeds"]] == [[0, 1, 2, 3, 4]] * 2  # in order
    # Every seed a trial lists ran to completion exactly once, and nothing else ran.
    runs = store.read_runs()
    done = runs[runs["state"] == "COMPLETE"].groupby("trial")["seed"].apply(sorted).to_dict()
    assert {t: sorted(int(s) for s in seeds) for t, seeds in trials["seeds"].items()} == done
    assert len(runs) == 2 * 2 + 2 * 5
    # The study was told each race's aggregate, and carries why it ended.
    study = Search.create_or_load(controller.recipe, storage_url(controller.recipe, store), "syn")
    for t in study.trials():
        row = trials.loc[t["number"]]
        assert t["state"] == row["state"] and t["user_attrs"]["racing"] == row["racing"]
        assert t["value"] == pytest.approx(row["value"])
    # The ranking shows the same values and why each race ended.
    ranked = rank_sweep(store).set_index("trial")
    for number, row in trials.iterrows():
        assert ranked.loc[number, "value"] == pytest.approx(row["value"])
        assert ranked.loc[number, "racing"] == row["racing"]
        assert ranked.loc[number, "n_seeds"] == spent[number]


def test_racing_with_optuna_ends_every_race(local_ray, tmp_path: Path) -> None:
    """Optuna hands out configs one by one; each races against those already run, a lone leader
    waits for a rival, and once the search is exhausted every race has ended (none is left
    RUNNING), each told to the study with its aggregate."""
    path = synthetic_recipe(
        tmp_path,
        job={"kind": "synthetic", "steps": 4, "noise": 0.0, "seed_noise": 0.05,
             "eval": {"every": 2, "ks": [1], "samples": 4}},
        space={"loss.eps_low": {"type": "uniform", "low": 0.0, "high": 0.3}},
        search={"kind": "optuna", "sampler": "random", "n_trials": 4, "seeds": 4,
                "max_concurrent": 2, "racing": {"min_seeds": 2, "max_seeds": 4}},
    )  # fmt: skip
    controller, store = start(path)
    status = controller.run()
    assert status["state"] == "finished"
    trials = store.read_trials()
    assert len(trials) == 4 and (trials["state"] == "COMPLETE").all()
    assert set(trials["racing"]) <= {"dropped", "separated", "max_seeds"}
    assert trials["racing"].notna().all()
    assert trials["seeds"].apply(len).between(2, 4).all()
