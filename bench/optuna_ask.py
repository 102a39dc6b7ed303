"""Benchmark: Optuna's ask time as the study grows, and what ask-ahead leaves the controller.

For each sampler (TPE -- the recipe default, ``search.sampler: tpe`` --, random) and study size
(100 / 1,000 / 5,000 / 10,000 finished trials, added directly with ``add_trials``), times one
ask as the controller makes it (``study.ask()`` plus one ``suggest_*`` per parameter of the space
of ``recipes/nsr_optuna.yaml``) on Optuna's in-memory storage, and for comparison on the SQLite
storage sweeper used before (sizes up to ``--sqlite-max``). Then, at the largest size, drives
:class:`sweeper.search.Search` the way the controller does (ask, a job of ``--job-ms``, tell)
with and without ask-ahead and prints how long the controller was blocked in ``ask()``. Also the
memory one finished trial takes in the in-memory study (tracemalloc).

Run:  .venv/bin/python bench/optuna_ask.py [--sizes 100,1000,5000,10000] [--asks 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from sweeper.config.recipe import Recipe
from sweeper.search import Search, make_sampler, make_storage
from sweeper.search.distributions import optuna_distribution, suggest

ROOT = Path(__file__).resolve().parent.parent


def recipe(sampler: str, n_trials: int) -> Recipe:
    raw = yaml.safe_load((ROOT / "recipes" / "nsr_optuna.yaml").read_text())
    raw["search"] = {**raw["search"], "sampler": sampler, "n_trials": n_trials}
    raw["search"].pop("pruner", None)
    return Recipe.model_validate(raw)


def finished_trials(r: Recipe, n: int, steps: int = 20) -> list[Any]:
    """``n`` COMPLETE trials with random params in the space, a value and ``steps``
    intermediate values each (what a finished sweeper trial holds)."""
    rng = np.random.default_rng(0)
    dists = {k: optuna_distribution(spec) for k, spec in r.space.items()}
    out = []
    for _ in range(n):
        params = {}
        for key, d in dists.items():
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                params[key] = d.choices[int(rng.integers(len(d.choices)))]
            elif isinstance(d, optuna.distributions.IntDistribution):
                params[key] = int(d.low + d.step * rng.integers((d.high - d.low) // d.step + 1))
            elif d.log:
                params[key] = float(np.exp(rng.uniform(np.log(d.low), np.log(d.high))))
            else:
                params[key] = float(rng.uniform(d.low, d.high))
        inter = {s: float(rng.random()) for s in range(0, steps * 5, 5)}
        out.append(
            optuna.trial.create_trial(
                params=params, distributions=dists, value=float(rng.random()),
                intermediate_values=inter,
            )
        )  # fmt: skip
    return out


def ask_ms(r: Recipe, n: int, asks: int, storage: Any = None) -> float:
    study = optuna.create_study(
        storage=storage, direction="maximize", sampler=make_sampler(r.search)
    )
    study.add_trials(finished_trials(r, n))
    times = []
    for _ in range(asks):
        t0 = time.perf_counter()
        trial = study.ask()
        params = {key: suggest(trial, key, spec) for key, spec in r.space.items()}
        times.append(time.perf_counter() - t0)
        study.tell(trial, 0.5 + 0.0 * len(params))
    return 1000 * statistics.median(times)


def blocked_ms(r: Recipe, n: int, asks: int, job_ms: float, ahead: bool) -> float:
    """Median time the controller waits in ``Search.ask()`` between jobs of ``job_ms``."""
    study = optuna.create_study(direction="maximize", sampler=make_sampler(r.search))
    study.add_trials(finished_trials(r, n))
    search = Search(r.model_copy(), study, ask_ahead=ahead)
    waits = []
    for _ in range(asks):
        t0 = time.perf_counter()
        asked = search.ask()
        waits.append(time.perf_counter() - t0)
        assert asked is not None
        time.sleep(job_ms / 1000)  # the jobs run; the next trial is asked meanwhile
        search.tell(asked[0], 0.5)
    search.close()
    return 1000 * statistics.median(waits[1:])  # the first ask has nothing ahead of it


def bytes_per_trial(r: Recipe, n: int) -> float:
    tracemalloc.start()
    study = optuna.create_study(direction="maximize")
    base = tracemalloc.get_traced_memory()[0]
    study.add_trials(finished_trials(r, n))
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return used / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="100,1000,5000,10000")
    p.add_argument("--samplers", default="tpe,random")
    p.add_argument("--asks", type=int, default=10)
    p.add_argument("--sqlite-max", type=int, default=1000)
    p.add_argument("--job-ms", type=float, default=500.0)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"ask time (ms, median of {args.asks}): study.ask() + suggest per param")
    print(f"{'sampler':8} {'trials':>7} {'in-memory':>10} {'sqlite':>9}")
    for name in args.samplers.split(","):
        for n in sizes:
            r = recipe(name, n + args.asks + 1)
            mem = ask_ms(r, n, args.asks)
            sql = "-"
            if n <= args.sqlite_max:
                with tempfile.TemporaryDirectory() as tmp:
                    storage = make_storage(f"sqlite:///{tmp}/optuna.db")
                    sql = f"{ask_ms(r, n, args.asks, storage):9.1f}"
                    storage.engine.dispose()
            print(f"{name:8} {n:7d} {mem:10.1f} {sql:>9}", flush=True)
    n = sizes[-1]
    r = recipe("tpe", n + args.asks + 1)
    print(
        f"\ncontroller blocked in ask() (ms, median), TPE at {n} trials, {args.job_ms:.0f} ms jobs:"
    )
    for ahead in (False, True):
        label = "ask-ahead" if ahead else "no ask-ahead"
        print(f"  {label:12} {blocked_ms(r, n, args.asks, args.job_ms, ahead):8.1f}", flush=True)
    print(f"\nmemory per finished trial in the in-memory study: {bytes_per_trial(r, 2000):.0f} B")


if __name__ == "__main__":
    main()
