"""Benchmark: the controller at scale (issue 11) -- a simulated 256-GPU cluster, then real Ray.

(a) simulated: the controller's real scheduling, trial book, writer, store and Optuna study
drive a simulated cluster of 32 nodes x 8 GPUs (one job per GPU) on a discrete-event clock
(``sweeper.controller.simulated``: no Ray, no actors). Each job yields the rows of the
``synthetic`` job (200 steps, eval every 10) at a per-job step time drawn from 0.5-1.5 simulated
seconds, so a sweep of 10,000 trials x 3 seeds is ~6.5 simulated hours. Optuna's random
sampler hands out the trials (its ask cost is measured and reported apart). The sweep dir is a
real one in a temp dir. Prints, with PASS/FAIL against the goals:

- controller CPU per trial (process time, less the simulated cluster's own) early vs late in
  the sweep, end/start <= 1.2; Optuna's share (ask/tell/report) apart;
- RSS growth from the first finished trial to the end, < 100 MB;
- files in the sweep dir: at most one trace file per completed attempt;
- the wall time of ``sweeper rank`` (a fresh process) over the result, <= 5 s.

The windows are ``--window`` trials (1,000) in finishing order, after the first and before the
last wave of trials (the ramp-up and drain of one cluster's worth), so both see a full cluster.

(b) real: N synthetic trials on the embedded Ray (private, ``address="local"``) with warm
workers, then Ray Tune + ``OptunaSearch`` on the same trials in the same Ray: per-trial overhead
early vs late and the ratio of the two (``bench/controller_vs_tune.py``'s code).

Run:  .venv/bin/python bench/controller_scale.py                       # (a) 10,000, (b) 2,000
      .venv/bin/python bench/controller_scale.py --trials 500 --skip-real  # quick
      .venv/bin/python bench/controller_scale.py --skip-sim --real-trials 300 --tune-trials 100
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules

GOAL_CPU_RATIO = 1.2
GOAL_RSS_MB = 100.0
GOAL_RANK_SECONDS = 5.0


# ---------------------------------------------------------------------- (a) simulated


@dataclass
class SimConfig:
    """One simulated sweep."""

    trials: int = 10_000
    seeds: int = 3
    steps: int = 200
    eval_every: int = 10
    nodes: int = 32
    gpus_per_node: int = 8
    step_seconds: tuple[float, float] = (0.5, 1.5)
    """Simulated seconds per step, drawn per job."""
    start_seconds: float = 2.0
    """Simulated seconds from dispatch to a job's first row."""
    die_prob: float = 0.0
    window: int = 1000
    optuna_storage: str | None = None
    """``run.optuna_storage`` (None: the default, an SQLite file in the sweep dir)."""

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


@dataclass
class Snapshot:
    """The controller's counters when a publish saw ``finished`` trials."""

    finished: int
    cpu: float  # process time, whole process
    cluster_cpu: float  # of which inside the simulated pool (making rows)
    optuna_cpu: float  # of which inside the Optuna study (ask/tell/report/...)
    rss: int  # bytes


@dataclass
class SimResult:
    """What a simulated run measured (``report`` prints it)."""

    config: SimConfig
    sweep_dir: str
    recipe: Any
    status: dict[str, Any]
    wall: float
    sim_seconds: float
    snapshots: list[Snapshot]
    ask_seconds: list[float]
    files: int
    trace_files: int
    completed_attempts: int
    rank_seconds: float
    rank_rc: int
    first: tuple[int, int] = (0, 0)
    last: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)


def sim_recipe(c: SimConfig, storage: str) -> dict[str, Any]:
    """The simulated sweep's recipe: random search over two PPO clip bounds."""
    return {
        "name": "scale-sim",
        "job": {"kind": "synthetic", "steps": c.steps, "eval": {"every": c.eval_every}},
        "space": {
            "loss.eps_low": {"type": "uniform", "low": 0.05, "high": 0.3},
            "loss.eps_high": {"type": "uniform", "low": 0.1, "high": 0.5},
        },
        "search": {
            "kind": "optuna",
            "sampler": "random",
            "n_trials": c.trials,
            "seeds": c.seeds,
            "max_concurrent": c.gpus,
        },
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"storage": storage, "optuna_storage": c.optuna_storage},
    }


@contextlib.contextmanager
def timed_search(acc: dict[str, float], asks: list[float]) -> Iterator[None]:
    """Accumulate the process time spent inside the Optuna study (every public method of
    ``Search`` the controller calls) into ``acc["cpu"]``; each ``ask``'s into ``asks``."""
    from sweeper.search import Search

    names = [n for n in ("ask", "tell", "report", "set_user_attr", "recover") if hasattr(Search, n)]
    saved = {n: Search.__dict__[n] for n in names if n in Search.__dict__}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.process_time() - t0
                acc["cpu"] += dt
                if name == "ask":
                    asks.append(dt)

        return timed

    for n, fn in saved.items():
        setattr(Search, n, wrap(n, fn))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(Search, n, fn)


def rss_bytes() -> int:
    """This process's resident set size now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def count_files(root: str) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def run_simulated(c: SimConfig, workdir: str) -> SimResult:
    """Run one simulated sweep into ``workdir`` and measure it (see the module docstring)."""
    from sweeper.config.loader import load_recipe
    from sweeper.controller import Controller
    from sweeper.controller.simulated import SimClock, SimulatedPool
    from sweeper.store import SweepStore, manifest

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "scale-sim.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(sim_recipe(c, os.path.join(workdir, "sweeps")), f)
    recipe, text = load_recipe(path)
    store = SweepStore.create(recipe.run.storage, recipe.name, text, recipe.resolved(), manifest())
    clock = SimClock()
    pool = SimulatedPool(
        clock,
        nodes=c.nodes,
        gpus_per_node=c.gpus_per_node,
        max_concurrent=recipe.search.max_concurrent,
        start_seconds=c.start_seconds,
        step_seconds=c.step_seconds,
        die_prob=c.die_prob,
    )
    optuna_cpu = {"cpu": 0.0}
    asks: list[float] = []
    snapshots: list[Snapshot] = []

    def on_update(status: dict[str, Any]) -> None:
        n = status["counts"]
        finished = n["COMPLETE"] + n["PRUNED"] + n["FAIL"]
        if snapshots and finished == snapshots[-1].finished:
            return
        snapshots.append(
            Snapshot(
                finished, time.process_time(), pool.cpu_seconds, optuna_cpu["cpu"], rss_bytes()
            )
        )

    controller = Controller(recipe, store, on_update=on_update, pool=pool, clock=clock)
    snapshots.append(Snapshot(0, time.process_time(), 0.0, 0.0, rss_bytes()))
    start = time.perf_counter()
    with timed_search(optuna_cpu, asks):
        status = controller.run()
    wall = time.perf_counter() - start

    sweep_dir = str(store.uri)
    runs = store.read_runs()
    completed = int((runs["state"] == "COMPLETE").sum())
    traces = os.path.join(sweep_dir, "traces")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper", "rank", sweep_dir],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    rank_seconds = time.perf_counter() - t0
    result = SimResult(
        config=c,
        sweep_dir=sweep_dir,
        recipe=recipe,
        status=status,
        wall=wall,
        sim_seconds=clock.now,
        snapshots=snapshots,
        ask_seconds=asks,
        files=count_files(sweep_dir),
        trace_files=count_files(traces) if os.path.isdir(traces) else 0,
        completed_attempts=completed,
        rank_seconds=rank_seconds,
        rank_rc=proc.returncode,
    )
    if proc.returncode != 0:
        result.notes.append(f"sweeper rank exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    _windows(result)
    return result


def _windows(r: SimResult) -> None:
    """The early and late windows of finished trials, after the first and before the last wave
    (one cluster's worth of trials: the ramp-up and the drain)."""
    n = r.snapshots[-1].finished
    wave = math.ceil(r.config.gpus / r.config.seeds)
    w = min(r.config.window, max(1, (n - 2 * wave) // 3))
    if n - 2 * wave < 3:  # too small a sweep for windows: use halves of all
        wave, w = 0, max(1, n // 2)
    r.first = (wave, wave + w)
    r.last = (n - wave - w, n - wave)


def _at(snapshots: list[Snapshot], finished: int) -> Snapshot:
    """The first snapshot with at least ``finished`` trials finished."""
    return next(s for s in snapshots if s.finished >= finished)


def window_cost(r: SimResult, window: tuple[int, int]) -> tuple[float, float]:
    """(controller CPU s per trial without Optuna, Optuna's CPU s per trial) over ``window``."""
    a, b = _at(r.snapshots, window[0]), _at(r.snapshots, window[1])
    trials = b.finished - a.finished
    if trials <= 0:
        return float("nan"), float("nan")
    optuna = b.optuna_cpu - a.optuna_cpu
    controller = (b.cpu - a.cpu) - (b.cluster_cpu - a.cluster_cpu) - optuna
    return controller / trials, optuna / trials


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_simulated(r: SimResult) -> bool:
    """Print the figures and a PASS/FAIL line per goal; True when every goal passes."""
    c = r.config
    counts = r.status["counts"]
    print(
        f"(a) simulated: {c.trials} trials x {c.seeds} seeds on {c.nodes} nodes x "
        f"{c.gpus_per_node} GPUs, {c.steps} steps (eval every {c.eval_every}), "
        f"step {c.step_seconds[0]}-{c.step_seconds[1]} s simulated, Optuna storage "
        f"{c.optuna_storage or 'SQLite in the sweep dir'}"
    )
    print(
        f"    {r.sim_seconds / 3600:.2f} h simulated in {r.wall:.1f} s wall; trials {counts}; "
        f"sweep dir {r.sweep_dir}"
    )
    (c1, o1), (c2, o2) = window_cost(r, r.first), window_cost(r, r.last)
    ratio = c2 / c1 if c1 > 0 else float("nan")
    cpu_all = r.snapshots[-1].cpu - r.snapshots[0].cpu
    cluster_all = r.snapshots[-1].cluster_cpu
    print(
        f"    process CPU {cpu_all:.1f} s: simulated cluster {cluster_all:.1f} s, Optuna "
        f"{r.snapshots[-1].optuna_cpu:.1f} s, controller {cpu_all - cluster_all - r.snapshots[-1].optuna_cpu:.1f} s"
    )
    print(
        f"    controller CPU/trial (without Optuna), trials {r.first[0]}-{r.first[1]}: "
        f"{c1 * 1000:.2f} ms; trials {r.last[0]}-{r.last[1]}: {c2 * 1000:.2f} ms"
    )
    asks = r.ask_seconds
    k = min(c.window, max(1, len(asks) // 4))
    ask1 = sum(asks[:k]) / k * 1000 if asks else float("nan")
    ask2 = sum(asks[-k:]) / k * 1000 if asks else float("nan")
    print(
        f"    Optuna CPU/trial (ask/tell/report): {o1 * 1000:.2f} ms -> {o2 * 1000:.2f} ms "
        f"(x{o2 / o1 if o1 > 0 else float('nan'):.2f}); ask alone, first {k} vs last {k} asks: "
        f"{ask1:.2f} ms -> {ask2:.2f} ms (x{ask2 / ask1 if ask1 > 0 else float('nan'):.2f})"
    )
    total1, total2 = c1 + o1, c2 + o2
    print(
        f"    controller CPU/trial with Optuna: {total1 * 1000:.2f} ms -> {total2 * 1000:.2f} ms "
        f"(x{total2 / total1 if total1 > 0 else float('nan'):.2f})"
    )
    warm = _at(r.snapshots, 1).rss
    end = r.snapshots[-1].rss
    peak = max(s.rss for s in r.snapshots)
    growth = (end - warm) / 2**20
    print(
        f"    RSS at the first finished trial {warm / 2**20:.0f} MB, at the end "
        f"{end / 2**20:.0f} MB (peak {peak / 2**20:.0f} MB)"
    )
    per_attempt = r.trace_files / max(r.completed_attempts, 1)
    print(
        f"    sweep dir: {r.files} files, {r.trace_files} under traces/ for "
        f"{r.completed_attempts} completed attempts ({per_attempt:.1f} per attempt)"
    )
    for note in r.notes:
        print(f"    note: {note}")
    scale = "" if c.trials >= 10_000 else f" [at {c.trials} trials; the goals are for 10,000]"
    goals = [
        (
            f"controller CPU/trial end/start <= {GOAL_CPU_RATIO} (without Optuna): {ratio:.2f}",
            ratio <= GOAL_CPU_RATIO,
        ),
        (f"RSS growth < {GOAL_RSS_MB:.0f} MB: {growth:.1f} MB", growth < GOAL_RSS_MB),
        (
            f"trace files <= completed attempts: {r.trace_files} for {r.completed_attempts}",
            r.trace_files <= r.completed_attempts,
        ),
        (
            f"sweeper rank <= {GOAL_RANK_SECONDS:.0f} s: {r.rank_seconds:.2f} s",
            r.rank_rc == 0 and r.rank_seconds <= GOAL_RANK_SECONDS,
        ),
    ]
    for text, ok in goals:
        print(f"  {_verdict(ok)}  {text}{scale}")
    return all(ok for _, ok in goals)


# ---------------------------------------------------------------------- (b) real Ray


def run_real(trials: int, tune_trials: int, workdir: str, window: int) -> None:
    """sweeper on the embedded Ray with warm workers, then Ray Tune on the same trials."""
    from controller_vs_tune import Workload, embedded_ray, run_sweeper, run_tune

    for side in ("sweeper", "tune"):
        os.makedirs(os.path.join(workdir, side), exist_ok=True)
    ours_w = Workload(trials=trials)
    theirs_w = Workload(trials=tune_trials)
    with embedded_ray(workdir, ours_w.concurrency):
        ours = run_sweeper(ours_w, os.path.join(workdir, "sweeper"))
        theirs = run_tune(theirs_w, os.path.join(workdir, "tune")) if tune_trials else None
    print(
        f"(b) real: embedded Ray, {ours_w.concurrency} slots, synthetic job of {ours_w.steps + 1} "
        f"rows x {ours_w.step_seconds} s; sweeper {trials} trials, Ray Tune {tune_trials}"
    )
    for name, w, t in (("sweeper", ours_w, ours), ("ray tune", theirs_w, theirs)):
        if t is None:
            continue
        n = len(t.done_at)
        k = min(window, max(1, (n - 2 * w.concurrency) // 3))
        a, b = w.concurrency, w.concurrency + k
        start, end = t.overhead(w, a, b), t.overhead(w, n - w.concurrency - k, n - w.concurrency)
        print(
            f"    {name:8s} wall {t.wall:8.1f} s, overhead/trial {t.overhead(w) * 1000:7.1f} ms "
            f"(trials {a}-{b}: {start * 1000:.1f} ms, last {k}: {end * 1000:.1f} ms, "
            f"end/start {end / start:.2f})"
        )
    if theirs is not None:
        ratio = ours.overhead(ours_w) / theirs.overhead(theirs_w)
        print(f"    overhead/trial sweeper / Ray Tune = {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000, help="simulated trials")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--window", type=int, default=1000, help="trials per early/late window")
    parser.add_argument(
        "--optuna-storage",
        default=None,
        help="(a): run.optuna_storage, e.g. sqlite:///:memory: (default: SQLite in the sweep dir)",
    )
    parser.add_argument("--real-trials", type=int, default=2000, help="(b): sweeper's trials")
    parser.add_argument("--tune-trials", type=int, default=None, help="(b): Tune's (default: same)")
    parser.add_argument("--skip-sim", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--dir", default=None, help="work dir (default: a new temp dir)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal fails")
    args = parser.parse_args()
    for name in ("trials", "seeds", "steps", "window", "real_trials"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            sys.exit(2)
    workdir = args.dir or tempfile.mkdtemp(prefix="sweeper-scale-")
    os.makedirs(workdir, exist_ok=True)
    ok = True
    if not args.skip_sim:
        c = SimConfig(
            trials=args.trials,
            seeds=args.seeds,
            steps=args.steps,
            window=args.window,
            optuna_storage=args.optuna_storage,
        )
        ok = report_simulated(run_simulated(c, os.path.join(workdir, "sim")))
    if not args.skip_real:
        tune = args.real_trials if args.tune_trials is None else args.tune_trials
        run_real(args.real_trials, tune, os.path.join(workdir, "real"), min(args.window, 200))
    sys.exit(1 if args.check and not ok else 0)


if __name__ == "__main__":
    main()
