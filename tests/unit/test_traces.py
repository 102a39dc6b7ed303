"""traces/: one file per ended attempt, segments, the reading rule, cleanup, projection, and
equality with the reader that read every part file (the pre-compaction ``read_traces``)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from sweeper.config.recipe import ObjectiveConfig
from sweeper.controller.writer import SweepWriter, TraceBuffer
from sweeper.errors import InputError
from sweeper.rank import scope_value, seed_values
from sweeper.store import SweepStore
from sweeper.traces import (
    TraceCompactor,
    TraceSet,
    attempt_name,
    combine,
    latest_attempt_mask,
    list_traces,
    trace_table,
)

KEYS = ["trial", "seed", "attempt", "step"]


def rows_of(trial: int, seed: int, steps: int = 6) -> list[dict[str, float]]:
    return [
        {"step": s, "m": trial + seed / 10 + s / 100, **({"e": 1.0 - s / 10} if s % 2 else {})}
        for s in range(steps)
    ]


def run_attempt(writer: SweepWriter, key: tuple[int, int, int], steps: int = 6) -> None:
    """As the controller does: parts every 2 rows, then end_attempt."""
    buf = TraceBuffer(*key)
    for i, row in enumerate(rows_of(key[0], key[1], steps)):
        buf.rows.append(row)
        if i % 2 == 1:
            writer.flush(buf)
    writer.end_attempt(buf)


def old_reader(store: SweepStore) -> pd.DataFrame:
    """The pre-compaction read_traces: every file as a dataset with a unified schema, keep the
    last of repeated keys, sort by the keys."""
    paths = sorted(str(p) for p in Path(store.path("traces")).glob("[!._]*.parquet"))
    ds = pads.dataset(paths, format="parquet")
    schema = pa.unify_schemas(
        [f.physical_schema for f in ds.get_fragments()], promote_options="permissive"
    )
    df = pads.dataset(paths, schema=schema, format="parquet").to_table().to_pandas()
    df = df.drop_duplicates(subset=KEYS, keep="last")
    return df.sort_values(KEYS, kind="stable").reset_index(drop=True)


def new_store(tmp_path: Path, fanout: int = 4, max_level: int = 2) -> SweepWriter:
    store = SweepStore.create(str(tmp_path), "s", "", {}, {})
    writer = SweepWriter(store, [])
    writer.traces = TraceCompactor(store, fanout=fanout, max_level=max_level)
    return writer


# --------------------------------------------------------------------------- compaction


def test_an_ended_attempt_is_one_file_and_its_parts_are_gone(tmp_path: Path) -> None:
    w = new_store(tmp_path)
    buf = TraceBuffer(3, 0, 1)
    buf.rows += rows_of(3, 0)[:2]
    w.flush(buf)
    buf.rows += rows_of(3, 0)[2:4]
    w.flush(buf)
    assert w.store.trace_files() == ["t000003-s0-a1-p00000.parquet", "t000003-s0-a1-p00001.parquet"]
    buf.rows += rows_of(3, 0)[4:]  # the last rows go straight into the attempt file
    w.end_attempt(buf)
    assert w.store.trace_files() == ["t000003-s0-a1.parquet"]
    df = pd.read_parquet(tmp_path / "s" / "traces" / "t000003-s0-a1.parquet")
    assert df["step"].tolist() == list(range(6))
    assert df["m"].tolist() == [r["m"] for r in rows_of(3, 0)]
    assert math.isnan(df["e"][0]) and df["e"][1] == pytest.approx(0.9)
    w.end_attempt(TraceBuffer(4, 0, 1))  # no rows: no file
    assert w.store.trace_files() == ["t000003-s0-a1.parquet"]


def test_attempt_files_merge_into_segments(tmp_path: Path) -> None:
    w = new_store(tmp_path, fanout=4, max_level=2)
    for t in range(3):
        run_attempt(w, (t, 0, 1))
    assert len(w.store.trace_files()) == 3
    run_attempt(w, (3, 0, 1))
    assert w.store.trace_files() == ["seg1-000000.parquet"]
    seg = pq.read_table(tmp_path / "s" / "traces" / "seg1-000000.parquet")
    assert (
        seg.schema.metadata[b"sweeper.attempts"] == b"[[0, 0, 1], [1, 0, 1], [2, 0, 1], [3, 0, 1]]"
    )
    for t in range(4, 18):
        run_attempt(w, (t, t % 2, 1))
    files = w.store.trace_files()
    assert files == ["seg2-000000.parquet", "t000016-s0-a1.parquet", "t000017-s1-a1.parquet"]
    df = w.store.read_traces(completed_only=False)
    assert len(df) == 18 * 6 and not df.duplicated(KEYS).any()
    pd.testing.assert_frame_equal(df, old_reader(w.store)[list(df.columns)])


def test_reader_counts_a_row_once_in_every_crash_window(tmp_path: Path) -> None:
    """Files left as a SIGKILL between writing a file and deleting its inputs leaves them."""
    w = new_store(tmp_path, fanout=2, max_level=1)
    store = w.store
    for t in range(2):
        run_attempt(w, (t, 0, 1))  # -> seg1-000000
    traces = tmp_path / "s" / "traces"
    expect = store.read_traces(completed_only=False)
    # leftover attempt files the segment covers, and parts of an attempt with an attempt file
    for t in range(2):
        pq.write_table(trace_table(t, 0, 1, rows_of(t, 0)), traces / attempt_name((t, 0, 1)))
    store.append_trace(0, 0, 1, rows_of(0, 0)[:3])
    # a compacted attempt whose parts were not deleted yet
    store.append_trace(5, 0, 1, rows_of(5, 0)[:3])
    store.append_trace(5, 0, 1, rows_of(5, 0)[3:])
    pq.write_table(trace_table(5, 0, 1, rows_of(5, 0)), traces / attempt_name((5, 0, 1)))
    # parts of an attempt that was never compacted (the controller died while it ran)
    store.append_trace(6, 1, 2, rows_of(6, 1)[:4])
    (traces / ".t000006-s1-a2-p00001.parquet.tmp-0123").write_bytes(b"PAR1 half")
    got = store.read_traces(completed_only=False)
    assert not got.duplicated(KEYS).any()
    assert len(got) == len(expect) + 6 + 4
    ts = TraceSet(store)
    ts.refresh()
    assert sum(ts.tables[n].num_rows for n in ts.files) == len(got)
    # resume: covered files deleted, orphan parts compacted, temp files gone
    stats = TraceCompactor(store, fanout=2, max_level=1).recover()
    assert stats == {"deleted": 1 + 2 + 1 + 2, "compacted": 1}
    # the two attempt files left (trials 5, 6) make a merge due: fan-out 2
    assert store.trace_files() == ["seg1-000000.parquet", "seg1-000001.parquet"]
    assert not list(traces.glob(".*"))
    pd.testing.assert_frame_equal(store.read_traces(completed_only=False), got)


def test_reader_lists_again_when_a_file_vanishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = new_store(tmp_path, fanout=2)
    run_attempt(w, (0, 0, 1))
    stale = list_traces(w.store)
    run_attempt(w, (1, 0, 1))  # merges: the attempt file in `stale` is deleted
    import sweeper.traces as traces_mod

    calls = []
    real = traces_mod.list_traces

    def first_stale(store: SweepStore) -> object:
        calls.append(1)
        return stale if len(calls) == 1 else real(store)

    monkeypatch.setattr(traces_mod, "list_traces", first_stale)
    df = w.store.read_traces(completed_only=False)
    assert len(calls) == 2 and len(df) == 12


def test_writer_state_survives_a_new_process(tmp_path: Path) -> None:
    w = new_store(tmp_path, fanout=3, max_level=1)
    run_attempt(w, (0, 0, 1))
    run_attempt(w, (1, 0, 1))
    again = SweepWriter(SweepStore.open(w.store.uri), [])  # a resumed controller
    again.traces = TraceCompactor(again.store, fanout=3, max_level=1)
    again.recover_traces()
    run_attempt(again, (2, 0, 1))  # the third attempt file: merged with the two before
    assert again.store.trace_files() == ["seg1-000000.parquet"]
    run_attempt(again, (3, 0, 1))
    run_attempt(again, (4, 0, 1))
    run_attempt(again, (5, 0, 1))
    assert again.store.trace_files() == ["seg1-000000.parquet", "seg1-000001.parquet"]


# --------------------------------------------------------------------------- reading


def test_projection_reads_only_the_keys_and_asked_columns(tmp_path: Path) -> None:
    w = new_store(tmp_path)
    for t in range(5):
        run_attempt(w, (t, 0, 1))
    w.store.append_trace(9, 0, 1, [{"step": 0, "m": 1.0, "x": 2.0}])  # a live part
    df = w.store.read_traces(completed_only=False, columns=["m", "absent"])
    assert list(df.columns) == [*KEYS, "m"]
    full = w.store.read_traces(completed_only=False)
    assert set(full.columns) == {*KEYS, "m", "e", "x"}
    pd.testing.assert_frame_equal(df, full[[*KEYS, "m"]])


def test_equal_to_the_old_reader_on_a_mixed_dir(tmp_path: Path) -> None:
    """Random attempts, retries, live parts with a repeated step and a new column."""
    rng = random.Random(3)
    w = new_store(tmp_path, fanout=3, max_level=2)
    for t in rng.sample(range(40), 30):
        for seed in (0, 1):
            for attempt in range(1, rng.choice([2, 3])):
                run_attempt(w, (t, seed, attempt), steps=rng.randint(1, 8))
    w.store.append_trace(50, 0, 1, [{"step": 0, "m": 1.0}, {"step": 1, "m": 2.0}])
    w.store.append_trace(50, 0, 1, [{"step": 1, "m": 3.0, "new": 1.0}])  # step 1 again
    got = w.store.read_traces(completed_only=False)
    pd.testing.assert_frame_equal(got, old_reader(w.store)[list(got.columns)])
    assert got.loc[got["trial"] == 50, "m"].tolist() == [1.0, 3.0]
    # plain pyarrow/pandas over traces/: the same rows (no file holds another's rows here)
    plain = pd.read_parquet(tmp_path / "s" / "traces").drop_duplicates(KEYS, keep="last")
    assert len(plain) == len(got)


def test_a_damaged_segment_is_one_line(tmp_path: Path) -> None:
    w = new_store(tmp_path, fanout=2)
    run_attempt(w, (0, 0, 1))
    run_attempt(w, (1, 0, 1))
    seg = tmp_path / "s" / "traces" / "seg1-000000.parquet"
    seg.write_bytes(seg.read_bytes()[:40])
    with pytest.raises(InputError, match=r"seg1-000000\.parquet: damaged Parquet file") as err:
        w.store.read_traces(completed_only=False)
    assert "\n" not in str(err.value)


def test_combine_and_masks_match_pandas() -> None:
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame(
        {
            "trial": rng.integers(0, 6, n),
            "seed": rng.integers(-1, 2, n),
            "attempt": rng.integers(1, 3, n),
            "step": rng.integers(0, 20, n),
            "v": rng.random(n),
        }
    )
    got = combine([pa.Table.from_pandas(df, preserve_index=False)]).to_pandas()
    want = df.drop_duplicates(KEYS, keep="last").sort_values(KEYS).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    top = got.groupby(["trial", "seed"])["attempt"].transform("max") == got["attempt"]
    assert (latest_attempt_mask(got) == top.to_numpy()).all()
    shuffled = df.sample(frac=1, random_state=1)
    top = shuffled.groupby(["trial", "seed"])["attempt"].transform("max") == shuffled["attempt"]
    assert (latest_attempt_mask(shuffled) == top.to_numpy()).all()


# --------------------------------------------------------------------------- ranking


def reference_seed_values(traces: pd.DataFrame, objective: ObjectiveConfig) -> pd.DataFrame:
    """The per-group pandas implementation seed_values replaced (the exactness reference)."""

    def measured(g: pd.DataFrame, metric: str) -> np.ndarray:
        if metric not in g.columns:
            return np.empty(0)
        v = pd.to_numeric(g[metric], errors="coerce").to_numpy(dtype="float64")
        return v[np.isfinite(v)]

    def holds(g: pd.DataFrame, c: object) -> bool:
        v = measured(g, c.metric)  # type: ignore[attr-defined]
        if v.size == 0:
            return False
        last = float(v[-1])
        if c.min is not None and last < c.min:  # type: ignore[attr-defined]
            return False
        if c.max is not None and last > c.max:  # type: ignore[attr-defined]
            return False
        ratio = c.min_ratio  # type: ignore[attr-defined]
        return not (ratio is not None and last < ratio * v[0])

    top = traces.groupby(["trial", "seed"])["attempt"].transform("max")
    traces = traces[traces["attempt"] == top].sort_values(["trial", "seed", "step"], kind="stable")
    out = []
    for (trial, seed), g in traces.groupby(["trial", "seed"], sort=True):
        values, entropy = measured(g, objective.metric), measured(g, "entropy")
        out.append(
            {
                "trial": int(trial),
                "seed": int(seed),
                "value": scope_value(values, objective.scope, objective.mode),
                "feasible": all(holds(g, c) for c in objective.constraints),
                "final_entropy": float(entropy[-1]) if entropy.size else math.nan,
            }
        )
    return pd.DataFrame(out)


@pytest.mark.parametrize("scope", ["last", "avg", "best", "last-3-avg", "last-50-avg"])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_seed_values_equal_the_per_group_reference(scope: str, mode: str) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    df = pd.DataFrame(
        {
            "trial": rng.integers(0, 40, n),
            "seed": rng.integers(0, 3, n),
            "attempt": rng.integers(1, 3, n),
            "step": rng.permutation(n),
            "m": rng.random(n),
            "entropy": rng.random(n) + 0.5,
        }
    )
    df.loc[rng.random(n) < 0.3, "m"] = np.nan
    df.loc[rng.random(n) < 0.05, "m"] = np.inf
    df.loc[df["trial"] == 7, "m"] = np.nan  # never measured
    objective = ObjectiveConfig.model_validate(
        {
            "metric": "m",
            "scope": scope,
            "mode": mode,
            "constraints": [{"metric": "entropy", "min_ratio": 0.9}, {"metric": "m", "max": 0.95}],
        }
    )
    got = seed_values(df, objective)
    want = reference_seed_values(df, objective)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    sorted_df = df.sort_values(KEYS).reset_index(drop=True)  # the fast (pre-sorted) path
    pd.testing.assert_frame_equal(seed_values(sorted_df, objective), want, check_exact=True)


def test_rank_statistics_equal_the_per_trial_reference() -> None:
    """rank's per-trial numbers, computed per seed count at once, equal each trial's own."""
    from sweeper.rank import rank
    from sweeper.stats import aggregate, prob_improvement

    rng = np.random.default_rng(2)
    n = 6000
    df = pd.DataFrame(
        {
            "trial": rng.integers(0, 120, n),
            "seed": rng.integers(0, 5, n),
            "attempt": 1,
            "step": rng.permutation(n),
            "m": rng.random(n).round(2),  # ties between seeds
            "entropy": rng.random(n),
        }
    )
    df.loc[rng.random(n) < 0.4, "m"] = np.nan
    df.loc[df["trial"] % 17 == 0, "m"] = np.nan
    trials = pd.DataFrame({"trial": np.arange(125), "state": "COMPLETE"})
    for agg in ("mean", "median", "iqm", "min"):
        for mode in ("max", "min"):
            o = ObjectiveConfig.model_validate({"metric": "m", "seed_agg": agg, "mode": mode})
            table = rank(trials, df, o, []).set_index("trial")
            per_seed = seed_values(df, o)
            lead = int(table.index[0])
            lead_v = per_seed.loc[per_seed["trial"] == lead, "value"].to_numpy()
            for t, row in table.iterrows():
                g = per_seed[per_seed["trial"] == t]
                v = g["value"].to_numpy()
                f = v[np.isfinite(v)]
                e = g["final_entropy"].to_numpy()
                e = e[np.isfinite(e)]
                assert row["n_seeds"] == f.size
                for got, want in (
                    (row["value"], aggregate(f, agg)),
                    (row["value_std"], float(np.std(f, ddof=1)) if f.size > 1 else math.nan),
                    (row["final_entropy"], float(e.mean()) if e.size else math.nan),
                    (
                        row["prob_improvement"],
                        math.nan if t == lead else prob_improvement(lead_v, v, mode),
                    ),
                ):
                    assert (math.isnan(got) and math.isnan(want)) or got == want
