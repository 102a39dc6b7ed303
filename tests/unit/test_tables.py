"""The trial and run tables' log (sweeper.tables): appended changes read back as if the tables
had been written whole, folds keep them so, a fold killed at any point loses and regresses no
row, and the work per change does not grow with the table."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import sweeper.storage as storage_mod
import sweeper.tables as tables_mod
from sweeper.store import SweepStore
from sweeper.tables import LOG_DIR, LOG_SEQ_KEY

PARAMS = ["p.i", "p.f", "p.mix", "p.b"]


def new_store(tmp_path: Path, name: str = "s") -> SweepStore:
    store = SweepStore(str(tmp_path / name))
    store._mkdir("")
    return store


def whole(tmp_path: Path, trials: list[dict[str, Any]], runs: list[dict[str, Any]]):
    """What the tables read as when written whole from these rows (sorted by key)."""
    ref = new_store(tmp_path, "ref")
    if trials:  # (nothing written reads as the empty frame)
        ref.write_trials(sorted(trials, key=lambda r: r["trial"]), PARAMS)
    if runs:
        ref.write_runs(sorted(runs, key=lambda r: (r["trial"], r["seed"], r["attempt"])))
    return ref.read_trials(), ref.read_runs()


def trial_row(n: int, state: str = "RUNNING", **kw: Any) -> dict[str, Any]:
    row = {
        "trial": n, "state": state, "p.i": n % 5, "p.f": 0.1 * n, "p.mix": "auto",
        "p.b": n % 2 == 0, "value": math.nan, "seeds": [0, 1],
        "started_at": "2025-01-01T00:00:00+00:00", "ended_at": None, "error": None,
    }  # fmt: skip
    row.update(kw)
    return row


def run_row(n: int, seed: int, attempt: int = 1, state: str = "RUNNING") -> dict[str, Any]:
    return {
        "trial": n, "seed": seed, "attempt": attempt, "state": state, "worker": f"w{n % 3}",
        "node": "n0", "started_at": "2025-01-01T00:00:01+00:00", "ended_at": None, "error": None,
    }  # fmt: skip


def changes(seed: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    """A random history of ``n`` changes: trials opened, runs started and ended, trials
    finished, a parameter that turns mixed ("auto" and numbers) on the way."""
    rng = random.Random(seed)
    out: list[tuple[str, dict[str, Any]]] = []
    opened = 0
    for _ in range(n):
        if opened == 0 or rng.random() < 0.3:
            out.append(("trial", trial_row(opened, **{"p.mix": rng.choice(["auto", 0.5, 2])})))
            opened += 1
            continue
        t = rng.randrange(opened)
        if rng.random() < 0.5:
            out.append(
                ("run", run_row(t, rng.randrange(2), state=rng.choice(["RUNNING", "COMPLETE"])))
            )
        else:
            out.append(("trial", trial_row(t, "COMPLETE", value=rng.random(), **{"p.mix": 1.5})))
    return out


def apply(store: SweepStore, history: list[tuple[str, dict[str, Any]]]) -> tuple[dict, dict]:
    trials: dict[Any, dict[str, Any]] = {}
    runs: dict[Any, dict[str, Any]] = {}
    for kind, row in history:
        if kind == "trial":
            store.append_trials([row], PARAMS)
            trials[row["trial"]] = row
        else:
            store.append_runs([row])
            runs[(row["trial"], row["seed"], row["attempt"])] = row
    return trials, runs


def assert_same(store: SweepStore, tmp_path: Path, trials: dict, runs: dict) -> None:
    want_t, want_r = whole(tmp_path, list(trials.values()), list(runs.values()))
    pd.testing.assert_frame_equal(store.read_trials(), want_t)
    pd.testing.assert_frame_equal(store.read_runs(), want_r)


@pytest.fixture
def small_log(monkeypatch: pytest.MonkeyPatch, no_fsync: None) -> None:
    """Small segments and frequent folds, so a short history crosses both."""
    monkeypatch.setattr(tables_mod, "SEGMENT_RECORDS", 8)
    monkeypatch.setattr(tables_mod, "FOLD_MIN_RECORDS", 20)


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Atomic writes without the fsync (the tests' thousands of writes; durability is not what
    they check: the crash tests leave files as a kill would)."""

    def write(path: Path, data: bytes) -> None:
        path.write_bytes(data)

    monkeypatch.setattr(storage_mod, "_write_file", write)


# --------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_reads_as_the_table_written_whole(tmp_path: Path, small_log: None, seed: int) -> None:
    store = new_store(tmp_path)
    history = changes(seed, 300)
    trials, runs = apply(store, history[:137])
    assert_same(store, tmp_path, trials, runs)  # mid-log: base + segments
    more_t, more_r = apply(store, history[137:])
    trials.update(more_t)
    runs.update(more_r)
    assert_same(store, tmp_path, trials, runs)
    stats = store.table_stats()
    assert stats["trials"]["folds"] >= 2 and stats["runs"]["folds"] >= 1
    store.fold_tables()
    assert not list((tmp_path / "s" / LOG_DIR).iterdir())  # folded: the log is empty
    assert_same(store, tmp_path, trials, runs)
    # Plain pandas reads the folded base tables.
    want_t, want_r = whole(tmp_path, list(trials.values()), list(runs.values()))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s" / "trials.parquet"), want_t)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s" / "runs.parquet"), want_r)


def test_segments_roll_and_hold_at_most_k_records(tmp_path: Path, small_log: None) -> None:
    store = new_store(tmp_path)
    for n in range(19):
        store.append_trials([trial_row(n)], PARAMS)
    segs = sorted(p.name for p in (tmp_path / "s" / LOG_DIR).iterdir())
    assert segs == [f"trials-{i:012d}.parquet" for i in (1, 9, 17)]
    assert not (tmp_path / "s" / "trials.parquet").exists()  # not folded yet: log only
    assert store.read_trials()["trial"].tolist() == list(range(19))
    # A batch of rows larger than a segment spans segments.
    store.append_runs([run_row(n, 0) for n in range(11)])
    assert sorted(p.name for p in (tmp_path / "s" / LOG_DIR).glob("runs-*")) == [
        "runs-000000000001.parquet", "runs-000000000009.parquet",
    ]  # fmt: skip
    assert len(store.read_runs()) == 11


def test_latest_record_per_key_wins(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    store.write_trials([trial_row(0), trial_row(1)], PARAMS)  # a base written whole
    store.append_trials([trial_row(1, "COMPLETE", value=0.7)], PARAMS)
    store.append_trials([trial_row(1, "FAIL", error="late")], PARAMS)
    store.append_runs([run_row(0, 0), run_row(0, 0, state="COMPLETE"), run_row(0, 0, 2)])
    df = store.read_trials().set_index("trial")
    assert df.loc[1, "state"] == "FAIL" and df.loc[1, "error"] == "late"
    assert df.loc[0, "state"] == "RUNNING"
    runs = store.read_runs()
    assert runs[["attempt", "state"]].values.tolist() == [[1, "COMPLETE"], [2, "RUNNING"]]


def test_the_param_typing_rule_holds_over_base_and_log(tmp_path: Path) -> None:
    """A column's type is decided over every row, the base's and the log's: ints then a float
    make it float64, a text choice makes it text (numbers as their text), bools stay bool."""
    store = new_store(tmp_path)
    store.write_trials([trial_row(0, **{"p.i": 3, "p.mix": 0.2, "p.b": True})], PARAMS)
    store.append_trials([trial_row(1, **{"p.i": 2.5, "p.mix": "auto", "p.b": None})], PARAMS)
    df = store.read_trials()
    assert str(df["p.i"].dtype) == "float64" and df["p.i"].tolist() == [3.0, 2.5]
    assert df["p.mix"].tolist() == ["0.2", "auto"]
    assert df["p.b"].tolist() == [True, None]
    store.fold_tables()
    df2 = pd.read_parquet(tmp_path / "s" / "trials.parquet")
    pd.testing.assert_frame_equal(df2, df)
    # inf survives the log's JSON.
    store.append_trials([trial_row(2, **{"p.f": math.inf})], PARAMS)
    assert math.isinf(store.read_trials()["p.f"].iloc[2])
    # Dtypes equal a whole write's, empty log or not.
    want, _ = whole(tmp_path, [trial_row(0, **{"p.i": 3, "p.mix": 0.2, "p.b": True}),
                               trial_row(1, **{"p.i": 2.5, "p.mix": "auto", "p.b": None}),
                               trial_row(2, **{"p.f": math.inf})], [])  # fmt: skip
    pd.testing.assert_frame_equal(store.read_trials(), want)


def test_extra_columns_and_empty_tables(tmp_path: Path) -> None:
    store = new_store(tmp_path)
    assert store.read_trials().empty and "value" in store.read_trials().columns
    assert not store.has_runs()
    store.append_trials([{**trial_row(0), "racing": None}], PARAMS)
    store.append_trials([{**trial_row(1), "racing": "dropped"}], PARAMS)
    want, _ = whole(tmp_path, [{**trial_row(0), "racing": None},
                               {**trial_row(1), "racing": "dropped"}], [])  # fmt: skip
    pd.testing.assert_frame_equal(store.read_trials(), want)
    assert store.read_trials()["racing"].iloc[1] == "dropped"
    # Folded, then a row whose column is all null on the log's side (racing still running, a
    # parameter not sampled): the base's type holds, as in a whole write.
    store.fold_tables()
    late = {**trial_row(2), "racing": None, "p.i": None}
    store.append_trials([late], PARAMS)
    want, _ = whole(tmp_path, [{**trial_row(0), "racing": None},
                               {**trial_row(1), "racing": "dropped"}, late], [])  # fmt: skip
    pd.testing.assert_frame_equal(store.read_trials(), want)
    store.append_runs([run_row(0, 0)])
    assert store.has_runs()


# --------------------------------------------------------------------------- crash safety


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def interrupted_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, after: int = 0
) -> tuple[SweepStore, dict, dict]:
    """A writer with a base and a log, whose fold is cut short at ``where``: 'base' (while the
    new base is written), 'delete' (after ``after`` segments were deleted)."""
    monkeypatch.setattr(tables_mod, "SEGMENT_RECORDS", 4)
    monkeypatch.setattr(tables_mod, "FOLD_MIN_RECORDS", 10**9)  # folds only when asked
    store = new_store(tmp_path)
    base = [trial_row(n) for n in range(6)]
    store.write_trials(base, PARAMS)
    trials = {r["trial"]: r for r in base}
    history = [("trial", trial_row(n % 9, "COMPLETE", value=n / 10)) for n in range(15)]
    t, r = apply(store, history)
    trials.update(t)
    if where == "base":
        real = store.write_bytes

        def die_on_base(rel: str, data: bytes) -> str:
            if rel == "trials.parquet":  # a kill before the rename: only a temp file
                (tmp_path / "s" / ".trials.parquet.tmp-kill").write_bytes(data[:100])
                raise Killed
            return real(rel, data)

        monkeypatch.setattr(store, "write_bytes", die_on_base)
    else:
        real_remove, count = store.remove, [0]

        def die_on_remove(rel: str) -> None:
            if count[0] >= after:
                raise Killed
            count[0] += 1
            real_remove(rel)

        monkeypatch.setattr(store, "remove", die_on_remove)
    with pytest.raises(Killed):
        store.fold_tables()
    return store, trials, r


@pytest.mark.parametrize(("where", "after"), [("base", 0), ("delete", 0), ("delete", 1),
                                              ("delete", 3)])  # fmt: skip
def test_a_fold_killed_at_any_point_loses_and_regresses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, after: int
) -> None:
    _, trials, runs = interrupted_fold(tmp_path, monkeypatch, where, after)
    monkeypatch.undo()
    reader = SweepStore(str(tmp_path / "s"))  # a fresh reader (status, rank) sees every row
    assert_same(reader, tmp_path, trials, runs)
    left = sorted(p.name for p in (tmp_path / "s" / LOG_DIR).iterdir())
    assert len(left) == 4 - (after if where == "delete" else 0)
    # A new writer (resume) folds first: stale segments go, then its changes log as usual.
    writer = SweepStore(str(tmp_path / "s"))
    writer.append_trials([trial_row(3, "PRUNED")], PARAMS)
    trials[3] = trial_row(3, "PRUNED")
    assert_same(writer, tmp_path, trials, runs)
    assert sorted(p.name for p in (tmp_path / "s" / LOG_DIR).iterdir()) == [
        "trials-000000000016.parquet"  # numbering goes on after the last record folded
    ]
    writer.fold_tables()
    assert_same(SweepStore(str(tmp_path / "s")), tmp_path, trials, runs)


def test_readers_skip_segments_the_base_covers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The new base is written but no segment deleted: readers ignore records at or below the
    base's log_seq even if a segment's row would say otherwise (no regression)."""
    _, trials, runs = interrupted_fold(tmp_path, monkeypatch, "delete", 0)
    import pyarrow.parquet as pq

    meta = pq.read_metadata(tmp_path / "s" / "trials.parquet").metadata
    assert int(meta[LOG_SEQ_KEY]) == 15
    assert_same(SweepStore(str(tmp_path / "s")), tmp_path, trials, runs)


def test_a_failed_segment_write_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(tmp_path)
    store.append_trials([trial_row(0)], PARAMS)
    real = store.write_bytes

    def full(rel: str, data: bytes) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_bytes", full)
    with pytest.raises(OSError, match="disk full"):
        store.append_trials([trial_row(1)], PARAMS)
    monkeypatch.setattr(store, "write_bytes", real)
    store.append_trials([trial_row(2)], PARAMS)
    assert store.read_trials()["trial"].tolist() == [0, 2]


# --------------------------------------------------------------------------- cost per change


def work_per_change(tmp_path: Path, n_rows: int, n_changes: int) -> float:
    """Bytes written (segments and folds) per change to a table of ``n_rows`` trials."""
    store = new_store(tmp_path, f"w{n_rows}")
    store.write_trials([trial_row(n) for n in range(n_rows)], PARAMS)
    before = store.table_stats()["trials"]
    rng = random.Random(0)
    for i in range(n_changes):
        store.append_trials([trial_row(rng.randrange(n_rows), "COMPLETE", value=i)], PARAMS)
    after = store.table_stats()["trials"]
    written = (after["segment_bytes"] + after["fold_bytes"]) - (
        before["segment_bytes"] + before["fold_bytes"]
    )
    return written / n_changes


def test_work_per_change_does_not_grow_with_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_fsync: None
) -> None:
    """Bytes written per change at 10x the rows stay within 1.3x (folds amortised: each
    fold rewrites the table once per FOLD_FRACTION of its rows in changes). A whole rewrite
    per change, as before the log, would be 10x."""
    monkeypatch.setattr(tables_mod, "SEGMENT_RECORDS", 16)
    monkeypatch.setattr(tables_mod, "FOLD_MIN_RECORDS", 8)
    small = work_per_change(tmp_path, 100, 200)
    large = work_per_change(tmp_path, 1000, 1000)
    assert large < 1.3 * small, (small, large)


def test_the_digest_follows_every_change(tmp_path: Path) -> None:
    """The dashboard's fingerprint: it changes with a record in the open segment, a sealed
    segment, a fold -- and not without a change."""
    store = new_store(tmp_path)
    seen = {store.tables_digest()}
    for change in range(3):
        store.append_trials([trial_row(0, value=float(change))], PARAMS)  # same open segment
        seen.add(store.tables_digest())
    assert len(seen) == 4 and store.tables_digest() in seen
    store.fold_tables()
    assert store.tables_digest() not in seen
