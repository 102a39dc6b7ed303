"""Racing over seeds vs fixed seed counts: selection accuracy and jobs spent (issue 10).

    .venv/bin/python bench/racing.py     # --reps 1000 --noise-ratio 1 2 --racing 2-10@0.95 2-12@0.95

The synthetic job (``sweeper.synthetic.run_synthetic``, called directly: no Ray) on a 3 x 3 grid
of PPO-clip bounds (eps_low 0.10/0.15/0.20 x eps_high 0.25/0.30/0.35), 10 steps, objective
``mean_at_n`` at the last step. Its true values are known in closed form (``expected_accuracy``):
the best is eps 0.15/0.30, two configs trail it by about one gap ``g`` (~0.010), the other six by
4.9-6.9 ``g``. Each seed's trajectory is offset by N(0, sigma) with ``sigma = noise_ratio * g``
(``job.seed_noise``; the per-step noise is off, so sigma is the whole seed spread): seed noise
comparable to the gaps.

Each repetition draws fresh seeds: a pool shared by every strategy, so strategies are compared
on the same draws (paired). Strategies: every config on a fixed N = 2, 5, 10 seeds; and racing
(``sweeper.racing.SeedRace``, the decision code the controller uses) for each ``--racing``
MIN-MAX@CONFIDENCE, run two ways: in rounds (every launch of a decision runs, then the next
decision) and as the controller runs it (``--slots`` jobs at once, random durations, a decision
after every finished seed). The sweep's #1 is what ``sweeper rank`` shows: the config with the
best seed mean over every seed it ran, dropped configs included. Reported per strategy: the
probability that #1 is the true best (binomial standard error) and the mean jobs spent. Goal:
racing's accuracy >= fixed N = 10's (within 2 paired standard errors) with at most half its jobs.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import time
from collections.abc import Callable

import numpy as np

from sweeper.config.racing import RacingConfig
from sweeper.racing import ConfigSeeds, EndReason, SeedRace
from sweeper.synthetic import expected_accuracy, run_synthetic

STEPS = 10
GRID = list(itertools.product((0.10, 0.15, 0.20), (0.25, 0.30, 0.35)))


def job_of(eps_low: float, eps_high: float, sigma: float) -> dict:
    return {
        "kind": "synthetic",
        "steps": STEPS,
        "noise": 0.0,
        "seed_noise": sigma,
        "eval": {"every": STEPS, "ks": [1], "samples": 1},
        "loss": {"kind": "ppo_clip", "eps_low": eps_low, "eps_high": eps_high},
    }


def true_values() -> np.ndarray:
    return np.array(
        [expected_accuracy({"eps_low": lo, "eps_high": hi}, STEPS, STEPS) for lo, hi in GRID]
    )


class Jobs:
    """Runs (config, seed) jobs through the synthetic job, memoised across strategies."""

    def __init__(self, sigma: float) -> None:
        self.jobs = [job_of(lo, hi, sigma) for lo, hi in GRID]
        self._cache: dict[tuple[int, int], float] = {}

    def value(self, config: int, seed: int) -> float:
        key = (config, seed)
        if key not in self._cache:
            *_, last = run_synthetic(self.jobs[config], seed)
            self._cache[key] = float(last["mean_at_n"])
        return self._cache[key]


def fixed(jobs: Jobs, pool: list[int], rng: np.random.Generator, n: int) -> tuple[int, int]:
    """Every config on the first n seeds of the pool: (#1, jobs spent)."""
    means = [np.mean([jobs.value(c, s) for s in pool[:n]]) for c in range(len(GRID))]
    return int(np.argmax(means)), n * len(GRID)


def race(jobs: Jobs, pool: list[int], rng: np.random.Generator, rule: SeedRace) -> tuple[int, int]:
    """Racing in rounds: (#1 by seed mean over every seed run, jobs spent)."""
    values: dict[int, list[float]] = {c: [] for c in range(len(GRID))}
    ended: dict[int, EndReason] = {}
    spent = 0
    while True:
        states = [
            ConfigSeeds(trial=c, values=tuple(v), ended=ended.get(c)) for c, v in values.items()
        ]
        decision = rule.decide(states)
        for end in decision.ended:
            ended[end.trial] = end.reason
        if not decision.launch:
            break
        for trial, n in decision.launch:
            for _ in range(n):
                values[trial].append(jobs.value(trial, pool[len(values[trial])]))
                spent += 1
    means = {c: float(np.mean(v)) for c, v in values.items()}
    return max(means, key=lambda c: (means[c], -c)), spent


def race_async(
    jobs: Jobs, pool: list[int], rng: np.random.Generator, rule: SeedRace, slots: int
) -> tuple[int, int]:
    """Racing as the controller runs it: ``slots`` jobs at once, random durations, a decision
    after every finished seed. Running seeds of a dropped config finish and count."""
    values: dict[int, list[float]] = {c: [] for c in range(len(GRID))}
    running: dict[int, int] = dict.fromkeys(values, 0)
    ended: dict[int, EndReason] = {}
    in_flight: list[tuple[float, int, int]] = []  # (finish time, config, seed index)
    issued: dict[int, int] = dict.fromkeys(values, 0)
    now, spent = 0.0, 0
    while True:
        states = [ConfigSeeds(c, tuple(v), running[c], ended.get(c)) for c, v in values.items()]
        decision = rule.decide(states)
        for end in decision.ended:
            ended[end.trial] = end.reason
        for trial, n in decision.launch:
            for _ in range(n):
                if len(in_flight) >= slots:
                    break
                in_flight.append((now + rng.uniform(0.5, 1.5), trial, issued[trial]))
                issued[trial] += 1
                running[trial] += 1
                spent += 1
        if not in_flight:
            break
        in_flight.sort()
        now, trial, index = in_flight.pop(0)
        running[trial] -= 1
        values[trial].append(jobs.value(trial, pool[index]))
    means = {c: float(np.mean(v)) for c, v in values.items()}
    return max(means, key=lambda c: (means[c], -c)), spent


def parse_racing(text: str) -> RacingConfig:
    """``MIN-MAX@CONFIDENCE``, e.g. ``2-12@0.95``."""
    seeds, _, confidence = text.partition("@")
    low, _, high = seeds.partition("-")
    return RacingConfig(min_seeds=int(low), max_seeds=int(high), confidence=float(confidence))


def run_level(ratio: float, reps: int, racings: list[RacingConfig], slots: int) -> None:
    truth = true_values()
    order = np.argsort(-truth)
    best = int(order[0])
    gap = float(truth[order[0]] - truth[order[1]])
    sigma = ratio * gap
    pool_size = max(10, *(r.max_seeds for r in racings))
    strategies: dict[str, Callable[[Jobs, list[int], np.random.Generator], tuple[int, int]]] = {
        f"fixed N={n}": functools.partial(fixed, n=n) for n in (2, 5, 10)
    }
    for r in racings:
        tag = f"{r.min_seeds}-{r.max_seeds} @{r.confidence:g}"
        rule = SeedRace(r)
        strategies[f"racing {tag}, rounds"] = functools.partial(race, rule=rule)
        strategies[f"racing {tag}, {slots} slots async"] = functools.partial(
            race_async, rule=rule, slots=slots
        )
    hits: dict[str, list[bool]] = {name: [] for name in strategies}
    spent: dict[str, list[int]] = {name: [] for name in strategies}
    jobs = Jobs(sigma)
    t0 = time.perf_counter()
    for rep in range(reps):
        pool = [rep * 1000 + i for i in range(pool_size)]
        for name, run in strategies.items():
            top, n_jobs = run(jobs, pool, np.random.default_rng(rep))
            hits[name].append(top == best)
            spent[name].append(n_jobs)
    elapsed = time.perf_counter() - t0

    print(f"\n### seed sigma = {ratio:g} g = {sigma:.4f}: {reps} repetitions ({elapsed:.0f} s)\n")
    print("| strategy | P(#1 is the true best) | jobs (mean) | jobs / fixed N=10 |")
    print("|---|---|---|---|")
    base_hits = np.array(hits["fixed N=10"], dtype=float)
    base_jobs = float(np.mean(spent["fixed N=10"]))
    for name in strategies:
        p = float(np.mean(hits[name]))
        se = math.sqrt(p * (1 - p) / reps)
        jobs_mean = float(np.mean(spent[name]))
        print(f"| {name} | {p:.3f} ± {se:.3f} | {jobs_mean:.1f} | {jobs_mean / base_jobs:.2f} |")
    print()
    for name in strategies:
        if not name.startswith("racing"):
            continue
        diff = np.array(hits[name], dtype=float) - base_hits
        d, se = float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(reps))
        ratio_jobs = float(np.mean(spent[name])) / base_jobs
        goal = d >= -2 * se and ratio_jobs <= 0.5
        print(
            f"- {name}: accuracy - fixed N=10 = {d:+.3f} ± {se:.3f} (paired), "
            f"jobs ratio {ratio_jobs:.2f}: goal {'met' if goal else 'NOT met'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument(
        "--noise-ratio", type=float, nargs="+", default=[1.0, 2.0], help="seed sigma / gap g"
    )
    ap.add_argument(
        "--racing",
        nargs="+",
        default=["2-10@0.95", "2-12@0.95"],
        help="racing configs MIN-MAX@CONFIDENCE",
    )
    ap.add_argument("--slots", type=int, default=4, help="concurrent jobs of the async race")
    args = ap.parse_args()

    truth = true_values()
    order = np.argsort(-truth)
    best = int(order[0])
    gap = float(truth[order[0]] - truth[order[1]])
    print(f"{len(GRID)} configs (eps_low, eps_high); true value = mean_at_n at step {STEPS}:")
    print("  " + ", ".join(f"{GRID[c]}: {truth[c]:.4f}" for c in order))
    print(f"true best {GRID[best]}; gap g to the runner-up = {gap:.4f}; gaps to the best:")
    print("  " + ", ".join(f"{(truth[best] - truth[c]) / gap:.1f} g" for c in order[1:]))
    racings = [parse_racing(r) for r in args.racing]
    for ratio in args.noise_ratio:
        run_level(ratio, args.reps, racings, args.slots)
    print(
        "\ngoal: racing's accuracy >= fixed N=10's (within 2 paired standard errors) "
        "with at most half its jobs"
    )


if __name__ == "__main__":
    main()
