"""Trial/run table writes per state change: the table log vs rewriting the table whole (issue 11).

    .venv/bin/python bench/table_log.py     # --sizes 1000 10000 --changes 1000 --whole-changes 50

For each table size N (trials already in the book: a trials.parquet of N rows and a
runs.parquet of 3N attempt rows, as 3 seeds per trial), time ``--changes`` state changes the way
the controller makes them: per change, one attempt row (a job started or ended) and, one change in
three, one trial row (a trial opened or finished), through ``SweepStore.append_runs`` /
``append_trials`` (the table log: one small segment rewrite per change, a fold into the base table
now and then, see ``sweeper.tables``). The baseline is what the controller did before the log:
rewrite trials.parquet and runs.parquet whole at every change (``write_trials``/``write_runs`` of
every row), timed over ``--whole-changes`` changes. Reported per size: ms per change (folds
included, amortised) and the ratio of the largest size to the smallest: flat means ~1.
Also a read of the tables (base + log) at each size, what ``status``/``rank`` pay.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from typing import Any

from sweeper.store import SweepStore

PARAMS = ["loss.eps_low", "loss.eps_high"]
SEEDS = 3


def trial_row(n: int, state: str = "RUNNING", value: float = math.nan) -> dict[str, Any]:
    return {
        "trial": n, "state": state, "loss.eps_low": 0.05 + (n % 7) / 100,
        "loss.eps_high": 0.2 + (n % 11) / 100, "value": value, "seeds": list(range(SEEDS)),
        "started_at": "2025-01-01T00:00:00+00:00", "ended_at": None, "error": None,
    }  # fmt: skip


def run_row(n: int, seed: int, state: str = "COMPLETE") -> dict[str, Any]:
    return {
        "trial": n, "seed": seed, "attempt": 1, "state": state, "worker": f"worker-{n % 256}",
        "node": f"node-{n % 32}", "started_at": "2025-01-01T00:00:01+00:00",
        "ended_at": "2025-01-01T00:01:01+00:00", "error": None,
    }  # fmt: skip


def book(root: str, n: int) -> tuple[SweepStore, list[dict[str, Any]], list[dict[str, Any]]]:
    store = SweepStore(f"{root}/n{n}")
    store._mkdir("")
    trials = [trial_row(i, "COMPLETE", 0.5) for i in range(n)]
    runs = [run_row(i, s) for i in range(n) for s in range(SEEDS)]
    store.write_trials(trials, PARAMS)
    store.write_runs(runs)
    return store, trials, runs


def logged(store: SweepStore, n: int, changes: int) -> float:
    """Seconds per change through the table log."""
    rng = random.Random(0)
    start = time.perf_counter()
    for i in range(changes):
        t = n + i // SEEDS  # new trials keep arriving, as in a sweep
        store.append_runs([run_row(t, i % SEEDS, rng.choice(["RUNNING", "COMPLETE"]))])
        if i % 3 == 0:
            store.append_trials([trial_row(t, "COMPLETE", rng.random())], PARAMS)
    store.fold_tables()  # the controller's end: counted too
    return (time.perf_counter() - start) / changes


def whole(store: SweepStore, trials: list, runs: list, n: int, changes: int) -> float:
    """Seconds per change rewriting both tables whole (the controller before the log)."""
    start = time.perf_counter()
    for i in range(changes):
        t = n + i // SEEDS
        runs.append(run_row(t, i % SEEDS))
        store.write_runs(runs)
        if i % 3 == 0:
            trials.append(trial_row(t, "COMPLETE", 0.5))
            store.write_trials(trials, PARAMS)
    return (time.perf_counter() - start) / changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--whole-changes", type=int, default=50)
    args = ap.parse_args()
    per: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as root:
        print(f"{'trials':>8} {'log ms/change':>14} {'whole ms/change':>16} {'read ms':>8} "
              f"{'folds':>6}")  # fmt: skip
        for n in args.sizes:
            store, _, _ = book(root, n)
            per[n] = logged(store, n, args.changes)
            stats = store.table_stats()
            folds = int(stats["trials"]["folds"] + stats["runs"]["folds"])
            # A read mid-sweep: base + an unfolded log.
            for i in range(300):
                store.append_runs([run_row(n + args.changes + i, 0)])
            start = time.perf_counter()
            store.read_trials(), store.read_runs()
            read_ms = 1e3 * (time.perf_counter() - start)
            w_store, w_trials, w_runs = book(root + "/whole", n)
            w = whole(w_store, w_trials, w_runs, n, args.whole_changes)
            print(f"{n:>8} {1e3 * per[n]:>14.2f} {1e3 * w:>16.2f} {read_ms:>8.1f} {folds:>6}")
    lo, hi = min(args.sizes), max(args.sizes)
    print(f"log per change, {hi} / {lo} trials: {per[hi] / per[lo]:.2f} (flat: ~1)")


if __name__ == "__main__":
    main()
