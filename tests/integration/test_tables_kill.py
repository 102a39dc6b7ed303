"""The trial table's log under SIGKILL: a writer process killed at random moments -- while
appending, while folding -- loses no acknowledged change and regresses no row, and the next
writer (a resume) carries on from what is on disk (sweeper.tables)."""

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
from sweeper.tables import LOG_SEQ_KEY

N_TRIALS = 3000

# The writer: updates trial c % N to value c for c = start, start + 1, ...; prints c once
# append_trials returned (the change is durable). Folds are frequent (2% of 3,000 rows) and each
# rewrites the whole 3,000-row base, so some kills land inside a fold.
WRITER = """
import sys
import sweeper.tables as T
T.SEGMENT_RECORDS = 8
T.FOLD_MIN_RECORDS = 40
T.FOLD_FRACTION = 0.02
from sweeper.store import SweepStore
fold = T.TableLog.fold
def announced(self):
    print("fold", flush=True)  # the parent may kill it now, inside the fold
    fold(self)
T.TableLog.fold = announced
store = SweepStore(sys.argv[1])
n, c = int(sys.argv[2]), int(sys.argv[3])
while True:
    store.append_trials([{"trial": c % n, "state": "COMPLETE", "p": c % 7, "value": float(c),
                          "seeds": [0]}], ["p"])
    print(c, flush=True)
    c += 1
"""


def killed_in_fold(sweep: Path) -> bool:
    """Whether the kill left a fold half done: a new base being written (its temp file), or
    written with segments it covers not yet deleted."""
    if any(sweep.glob(".trials.parquet.tmp-*")):
        return True
    folded = int(pq.read_metadata(sweep / "trials.parquet").metadata[LOG_SEQ_KEY])
    firsts = [int(p.stem.split("-")[1]) for p in (sweep / "tables").glob("trials-*.parquet")]
    return any(f <= folded for f in firsts)


def test_sigkill_at_random_moments_loses_and_regresses_nothing(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    store = SweepStore(str(sweep))
    store._mkdir("")
    base = [{"trial": t, "state": "RUNNING", "p": 0, "value": -1.0, "seeds": [0]}
            for t in range(N_TRIALS)]  # fmt: skip
    store.write_trials(base, ["p"])
    acked: dict[int, int] = {}  # trial -> last acknowledged value
    maybe: dict[int, int] = {}  # trial -> a change cut short by a kill (written or not)
    rng = random.Random(11)
    seen = {"mid-fold": 0}
    start = 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for round_ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(sweep), str(N_TRIALS), str(start)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]  # its first fold, a change
        assert lines[-1], "the writer died"
        if round_ % 2:  # at a random moment
            time.sleep(rng.uniform(0.3, 1.5))
        else:  # inside a fold (after it began, somewhere in its reads, write or deletes)
            while (line := proc.stdout.readline()) and line != b"fold\n":
                lines.append(line)
            time.sleep(rng.uniform(0.0, 0.08))
        proc.send_signal(signal.SIGKILL)
        lines.append(proc.stdout.read())
        proc.wait(timeout=30)
        done = [int(x) for x in b"".join(lines).split() if x != b"fold"]
        assert done == list(range(start, start + len(done)))
        for c in done:
            acked[c % N_TRIALS] = c
        in_flight = start + len(done)  # the change the kill may have cut short
        seen["mid-fold"] += killed_in_fold(sweep)
        maybe[in_flight % N_TRIALS] = in_flight
        df = SweepStore(str(sweep)).read_trials().set_index("trial")
        assert len(df) == N_TRIALS
        for t, v in df["value"].items():
            want = acked.get(t, -1)
            ok = {want} | ({maybe[t]} if maybe.get(t, -1) > want else set())
            assert int(v) in ok, (t, v, want)
        start = in_flight + 1
    print("kills that left a fold half done (of 8):", seen["mid-fold"])
    # A last writer folds at the end: the base alone is complete, no segment is left.
    final = SweepStore(str(sweep))
    final.fold_tables()
    assert not list((sweep / "tables").iterdir())  # temp files of killed writes too
    assert not list(sweep.glob(".trials.parquet.tmp-*"))
    folded = pd.read_parquet(sweep / "trials.parquet").set_index("trial")
    pd.testing.assert_frame_equal(folded, final.read_trials().set_index("trial"))
