"""Benchmark: sweeper's controller vs Ray Tune (OptunaSearch) on the same N short trials.

Both run the same synthetic job (``sweeper.synthetic``: closed-form traces, a fixed sleep per
step) on one private local Ray instance, with the same Optuna sampler, trial count, concurrency
and per-trial resources. Prints each side's wall time, the per-trial overhead (wall time beyond
the trials' own sleeping, per trial) and the ratio sweeper / Tune.

Run:  .venv/bin/python bench/controller_vs_tune.py [--trials 40] [--steps 10] [--step-seconds 0.01]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
import yaml


@dataclass
class Workload:
    """N short synthetic trials: ``steps + 1`` rows each, ``step_seconds`` of sleep per row,
    ``concurrency`` at once, one CPU each."""

    trials: int = 40
    steps: int = 10
    step_seconds: float = 0.01
    concurrency: int = 2

    @property
    def job_seconds(self) -> float:
        """One trial's own work (its sleeping)."""
        return (self.steps + 1) * self.step_seconds

    @property
    def ideal(self) -> float:
        """The wall time of the trials' own work alone."""
        return self.trials * self.job_seconds / self.concurrency


@dataclass
class Timing:
    """One side's run: its wall time and when each trial finished (seconds from the start)."""

    wall: float
    done_at: list[float] = field(default_factory=list)

    def overhead(self, w: Workload, first: int = 0, last: int | None = None) -> float:
        """Per-trial overhead (s) over the trials finished ``first``..``last`` - 1 (in finishing
        order; all by default): the window's wall time beyond the trials' own work, per trial
        and slot -- (wall x concurrency / trials) - job_seconds."""
        last = len(self.done_at) if last is None else last
        if last <= first:
            return float("nan")
        t0 = self.done_at[first - 1] if first > 0 else 0.0
        whole = (first, last) == (0, len(self.done_at))
        t1 = self.wall if whole else self.done_at[last - 1]
        return (t1 - t0) * w.concurrency / (last - first) - w.job_seconds


def recipe_dict(w: Workload, storage: str, name: str = "bench-sweeper") -> dict[str, Any]:
    """The recipe both sides run (sweeper's form; Tune gets the same job and space)."""
    return {
        "name": name,
        "job": {
            "kind": "synthetic",
            "steps": w.steps,
            "step_seconds": w.step_seconds,
            "eval": {"every": 2, "ks": [1], "samples": 4},
        },
        "space": {"loss.eps_low": {"type": "uniform", "low": 0.0, "high": 0.5}},
        "search": {
            "kind": "optuna",
            "sampler": "random",
            "n_trials": w.trials,
            "seeds": 1,
            "max_concurrent": w.concurrency,
        },
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"storage": storage},
    }


@contextlib.contextmanager
def embedded_ray(workdir: str, num_cpus: int) -> Iterator[None]:
    """A private local Ray (never a stranger's cluster) with its temp dir under ``workdir``."""
    logging.getLogger("ray").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(
        address="local",
        _temp_dir=os.path.join(workdir, "ray"),
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=num_cpus,
        log_to_driver=False,
    )
    try:
        yield
    finally:
        ray.shutdown()


def run_sweeper(w: Workload, workdir: str) -> Timing:
    """sweeper's controller on warm workers of the connected Ray."""
    from sweeper.config.loader import load_recipe
    from sweeper.controller import Controller
    from sweeper.store import SweepStore, manifest

    path = os.path.join(workdir, "bench.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(recipe_dict(w, os.path.join(workdir, "sweeps")), f)
    recipe, text = load_recipe(path)
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    done_at: list[float] = []

    def on_update(status: dict[str, Any]) -> None:
        c = status["counts"]
        finished = c["COMPLETE"] + c["PRUNED"] + c["FAIL"]
        done_at.extend([time.perf_counter() - start] * (finished - len(done_at)))

    start = time.perf_counter()
    status = Controller(recipe, store, on_update=on_update).run()
    wall = time.perf_counter() - start
    assert status["counts"]["COMPLETE"] == w.trials, status["counts"]
    return Timing(wall, done_at)


def run_tune(w: Workload, workdir: str) -> Timing:
    """Ray Tune + ``OptunaSearch`` (the same sampler) on the same trials."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sweeper.synthetic import run_synthetic

    job = recipe_dict(w, "")["job"]

    def trainable(config: dict) -> None:
        spec = {**job, "loss": {"kind": "ppo_clip", "eps_low": config["eps_low"]}}
        last_eval: dict = {}
        for row in run_synthetic(spec, seed=0):
            # Tune needs the metric in every report: carry the last eval values forward.
            last_eval.update({k: v for k, v in row.items() if v == v})
            tune.report(dict(last_eval))

    done_at: list[float] = []

    class _Finishes(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            done_at.append(time.perf_counter() - start)

    searcher = OptunaSearch(
        space={"eps_low": tune.uniform(0.0, 0.5)},
        metric="mean_at_n",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=w.trials, max_concurrent_trials=w.concurrency
        ),
        run_config=tune.RunConfig(
            storage_path=os.path.join(workdir, "tune"),
            verbose=0,
            log_to_file=False,
            callbacks=[_Finishes()],
        ),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    assert len(results) == w.trials
    return Timing(wall, sorted(done_at))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=0.01)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    w = Workload(args.trials, args.steps, args.step_seconds, args.concurrency)
    workdir = tempfile.mkdtemp(prefix="sweeper-bench-")
    with embedded_ray(workdir, w.concurrency):
        ours = run_sweeper(w, workdir)
        theirs = run_tune(w, workdir)
    print(
        f"trials={w.trials} steps={w.steps} step_seconds={w.step_seconds} "
        f"concurrency={w.concurrency} (ideal wall {w.ideal:.2f}s)"
    )
    print(f"sweeper  wall {ours.wall:7.2f}s  overhead/trial {ours.overhead(w) * 1000:7.1f} ms")
    print(f"ray tune wall {theirs.wall:7.2f}s  overhead/trial {theirs.overhead(w) * 1000:7.1f} ms")
    print(f"ratio sweeper/tune wall = {ours.wall / theirs.wall:.2f}")


if __name__ == "__main__":
    main()
