"""Trace compaction under SIGKILL: no row of a completed attempt is lost or counted twice.

A subprocess drives the controller's real writer (:class:`SweepWriter`: parts every few steps,
``end_attempt`` -> one attempt file, merges into segments with a small fan-out so merges happen
often) in a loop, recording each attempt whose ``end_attempt`` returned in a ledger (fsynced).
It is SIGKILLed at random moments, 15 times; it starts each time with the resume cleanup, as a
resumed controller does. After every kill the reader must see every ledgered attempt's rows
exactly once, nothing unreadable, and no row twice among the files it picks; at the end the
cleanup leaves at most one file per completed attempt (far fewer: segments) and no part.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from sweeper.store import SweepStore
from sweeper.traces import TraceCompactor, TraceSet, list_traces

STEPS = 10
KILLS = 15

# A zygote: imports once, then forks one writer per round (so 15 rounds do not pay 15 imports);
# the test SIGKILLs the forked writer, the zygote reaps it and reports.
ZYGOTE = r"""
import os, sys
from sweeper.controller.writer import SweepWriter, TraceBuffer
from sweeper.store import SweepStore
from sweeper.traces import TraceCompactor


def write_forever(uri, ledger, trial, steps, ready):
    store = SweepStore(uri)
    writer = SweepWriter(store, [])
    writer.traces = TraceCompactor(store, fanout=3, max_level=2)
    writer.recover_traces()  # what a resumed controller does first
    os.write(ready, b"r")  # (only the zygote writes to stdout)
    while True:
        for seed in (0, 1):
            buf = TraceBuffer(trial, seed, 1)
            for step in range(steps):
                row = {"step": step, "m": trial * 1000.0 + seed * 100 + step}
                if step % 2:
                    row["other"] = 1.0  # parts differ in their columns
                buf.rows.append(row)
                if step % 3 == 2:
                    writer.flush(buf)
            writer.end_attempt(buf)
            with open(ledger, "a") as f:
                f.write(f"{trial} {seed}\n")
                f.flush()
                os.fsync(f.fileno())
        trial += 1


print("imported", flush=True)
for line in sys.stdin:
    uri, ledger, trial, steps = line.split()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            write_forever(uri, ledger, int(trial), int(steps), w)
        finally:
            os._exit(1)  # never back into the zygote's loop
    os.read(r, 1)  # the writer has cleaned up and starts writing
    os.close(r)
    os.close(w)
    print(pid, flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def _ledger(path: Path) -> set[tuple[int, int]]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # a line cut short by the kill is not a completed attempt
            out.add((int(parts[0]), int(parts[1])))
    return out


def _check(store: SweepStore, done: set[tuple[int, int]]) -> pd.DataFrame:
    traces = store.read_traces(completed_only=False)  # nothing unreadable
    keys = ["trial", "seed", "attempt", "step"]
    assert not traces.duplicated(keys).any()
    ts = TraceSet(store)
    ts.refresh()
    assert sum(ts.tables[n].num_rows for n in ts.files) == len(traces)  # no row picked twice
    for trial, seed in done:
        rows = traces[(traces["trial"] == trial) & (traces["seed"] == seed)]
        assert rows["step"].tolist() == list(range(STEPS)), (trial, seed)
        expected = [trial * 1000.0 + seed * 100 + s for s in range(STEPS)]
        assert rows["m"].tolist() == expected
    # every row right, those of attempts cut short too
    assert (traces["m"] == traces["trial"] * 1000.0 + traces["seed"] * 100 + traces["step"]).all()
    for p in Path(store.path("traces")).glob("*.parquet"):
        pq.read_table(p)  # every visible file reads whole
    return traces


def test_compaction_survives_sigkill(tmp_path: Path) -> None:
    store = SweepStore.create(str(tmp_path), "k", "", {}, {})
    ledger = tmp_path / "ledger.txt"
    rng = random.Random(11)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert zygote.stdin is not None and zygote.stdout is not None
    try:
        assert zygote.stdout.readline().strip() == "imported"
        started = time.monotonic()
        trial = 0
        for _ in range(KILLS):
            zygote.stdin.write(f"{store.uri} {ledger} {trial} {STEPS}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())  # once it is writing
            time.sleep(rng.uniform(0.02, 0.6))
            os.kill(pid, signal.SIGKILL)
            assert zygote.stdout.readline().strip() == "reaped"
            done = _ledger(ledger)
            traces = _check(store, done)
            # the next round takes fresh trial numbers: a resumed controller never reuses an
            # attempt's key
            trial = int(traces["trial"].max()) + 1 if len(traces) else 0
    finally:
        zygote.kill()
        zygote.wait(10)
    done = _ledger(ledger)
    assert len(done) >= 20, "the writer barely ran between kills"
    TraceCompactor(store, fanout=3, max_level=2).recover()
    traces = _check(store, done)
    listing = list_traces(store)
    assert not listing.parts
    assert not list(Path(store.path("traces")).glob(".*"))  # no temp file left
    attempts = traces[["trial", "seed"]].drop_duplicates()
    assert len(listing.names) <= len(attempts) // 2  # segments: far fewer than one per attempt
    assert time.monotonic() - started < 60
