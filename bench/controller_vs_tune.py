"""Benchmark: sweeper's controller vs Ray Tune (OptunaSearch) on the same N short trials.

Both run the same synthetic job (``sweeper.synthetic``: closed-form traces, a fixed sleep per
step) on one private local Ray instance, with the same Optuna sampler, trial count, concurrency
and per-trial resources. Prints each side's wall time, the per-trial overhead (wall time beyond
the trials' own sleeping, per trial) and the ratio sweeper / Tune.

Run:  .venv/bin/python bench/controller_vs_tune.py [--trials 40] [--steps 10] [--step-seconds 0.01]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import ray
import yaml


def recipe_dict(args: argparse.Namespace, storage: str) -> dict:
    return {
        "name": "bench-sweeper",
        "job": {
            "kind": "synthetic",
            "steps": args.steps,
            "step_seconds": args.step_seconds,
            "eval": {"every": 2, "ks": [1], "samples": 4},
        },
        "space": {"loss.eps_low": {"type": "uniform", "low": 0.0, "high": 0.5}},
        "search": {
            "kind": "optuna",
            "sampler": "random",
            "n_trials": args.trials,
            "seeds": 1,
            "max_concurrent": args.concurrency,
        },
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"storage": storage},
    }


def run_sweeper(args: argparse.Namespace, workdir: str) -> float:
    from sweeper.config.loader import load_recipe
    from sweeper.controller import Controller
    from sweeper.store import SweepStore, manifest

    path = os.path.join(workdir, "bench.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(recipe_dict(args, os.path.join(workdir, "sweeps")), f)
    recipe, text = load_recipe(path)
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    start = time.perf_counter()
    status = Controller(recipe, store).run()
    wall = time.perf_counter() - start
    assert status["counts"]["COMPLETE"] == args.trials, status["counts"]
    return wall


def run_tune(args: argparse.Namespace, workdir: str) -> float:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sweeper.synthetic import run_synthetic

    job = recipe_dict(args, "")["job"]

    def trainable(config: dict) -> None:
        spec = {**job, "loss": {"kind": "ppo_clip", "eps_low": config["eps_low"]}}
        last_eval: dict = {}
        for row in run_synthetic(spec, seed=0):
            # Tune needs the metric in every report: carry the last eval values forward.
            last_eval.update({k: v for k, v in row.items() if v == v})
            tune.report(dict(last_eval))

    import optuna

    searcher = OptunaSearch(
        space={"eps_low": tune.uniform(0.0, 0.5)},
        metric="mean_at_n",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=args.trials, max_concurrent_trials=args.concurrency
        ),
        run_config=tune.RunConfig(
            storage_path=os.path.join(workdir, "tune"), verbose=0, log_to_file=False
        ),
    )
    start = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - start
    assert len(results) == args.trials
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-seconds", type=float, default=0.01)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("ray").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    workdir = tempfile.mkdtemp(prefix="sweeper-bench-")
    ray.init(
        address="local",
        _temp_dir=os.path.join(workdir, "ray"),
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        num_cpus=args.concurrency,
        log_to_driver=False,
    )
    try:
        # Each trial's own work: steps+1 rows, one sleep each; trials run `concurrency` at once.
        ideal = args.trials * (args.steps + 1) * args.step_seconds / args.concurrency
        ours = run_sweeper(args, workdir)
        theirs = run_tune(args, workdir)
    finally:
        ray.shutdown()
    per = lambda wall: (wall - ideal) * args.concurrency / args.trials  # noqa: E731
    print(
        f"trials={args.trials} steps={args.steps} step_seconds={args.step_seconds} "
        f"concurrency={args.concurrency} (ideal wall {ideal:.2f}s)"
    )
    print(f"sweeper  wall {ours:7.2f}s  overhead/trial {per(ours) * 1000:7.1f} ms")
    print(f"ray tune wall {theirs:7.2f}s  overhead/trial {per(theirs) * 1000:7.1f} ms")
    print(f"ratio sweeper/tune wall = {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
