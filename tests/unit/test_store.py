"""The sweep directory: layout, atomic writes, schema versions, part counters, readers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

import sweeper.storage as store_mod
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError
from sweeper.store import SAMPLE_COLUMNS, SweepStore, decode_param, manifest

RECIPE_TEXT = """\
# demo sweep for the tests
name: demo
job:
  kind: rlvr
  steps: 10
  advantage: dr_grpo
  loss: {kind: ppo_clip, eps_low: 0.2, eps_high: 0.2, agg: token-mean}
space:
  loss.eps_low: [0.1, 0.2]
  loss.eps_high: [0.28, .inf]
search: {seeds: [0, 1]}
objective: {metric: mean_at_n, mode: max, scope: last}
"""

# trial -> (eps_low, eps_high, state, final mean_at_n of seed 0); seed 1 adds 0.02.
TRIALS: dict[int, tuple[float, float, str, float | None]] = {
    0: (0.1, 0.28, "COMPLETE", 0.50),
    1: (0.1, math.inf, "COMPLETE", 0.70),
    2: (0.2, 0.28, "COMPLETE", 0.60),
    3: (0.2, math.inf, "FAIL", None),
}


def trace_rows(final: float, entropy0: float = 1.0, entropy_end: float = 0.8) -> list[dict]:
    """11 steps; mean_at_n measured at steps 0, 5, 10 (NaN elsewhere), ending at ``final``;
    entropy measured every step, linear from entropy0 to entropy_end."""
    rows = []
    for step in range(11):
        row: dict[str, Any] = {
            "step": step,
            "entropy": entropy0 + (entropy_end - entropy0) * step / 10,
            "mean_at_n": math.nan,
        }
        if step % 5 == 0:
            row["mean_at_n"] = final - 0.2 + 0.1 * (step // 5)
        rows.append(row)
    return rows


def build_sweep(root: Path, name: str = "demo", recipe_text: str = RECIPE_TEXT) -> SweepStore:
    """A hand-made sweep dir: 4 trials x 2 seeds, trial 3 failed (its attempt 1 FAILed with
    great-looking rows that ranking must ignore), trial 1 seed 0 retried (attempt 1 lost)."""
    resolved = Recipe.model_validate(yaml.safe_load(recipe_text)).resolved()
    store = SweepStore.create(str(root), name, recipe_text, resolved, manifest())
    trials, runs = [], []
    for t, (lo, hi, state, final) in TRIALS.items():
        trials.append(
            {
                "trial": t,
                "state": state,
                "loss.eps_low": lo,
                "loss.eps_high": hi,
                "value": None if final is None else final + 0.01,
                "seeds": [0, 1],
                "started_at": "2025-01-01T00:00:00Z",
                "ended_at": "2025-01-01T00:01:00Z",
                "error": "ValueError: NaN loss" if state == "FAIL" else None,
            }
        )
        for seed in (0, 1):
            if state == "FAIL":
                store.append_trace(t, seed, 1, trace_rows(0.99))
                runs.append({"trial": t, "seed": seed, "attempt": 1, "state": "FAIL"})
                continue
            attempt = 1
            if t == 1 and seed == 0:  # a worker died: attempt 1 lost, attempt 2 completed
                store.append_trace(t, seed, 1, trace_rows(0.05)[:3])
                runs.append({"trial": t, "seed": seed, "attempt": 1, "state": "FAIL"})
                attempt = 2
            rows = trace_rows(final + 0.02 * seed)
            store.append_trace(t, seed, attempt, rows[:6])  # streamed in two parts
            store.append_trace(t, seed, attempt, rows[6:])
            runs.append(
                {
                    "trial": t,
                    "seed": seed,
                    "attempt": attempt,
                    "state": "COMPLETE",
                    "worker": f"w{seed}",
                    "node": "n0",
                }
            )
    store.write_trials(trials, ["loss.eps_low", "loss.eps_high"])
    store.write_runs(runs)
    store.write_status({"counts": {"COMPLETE": 3, "FAIL": 1}, "running": []})
    return store


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- layout


def test_create_writes_the_layout(tmp_path: Path) -> None:
    resolved = {"name": "demo", "job": {"kind": "rlvr", "loss": {"eps_high": math.inf}}}
    s = SweepStore.create(str(tmp_path / "sweeps"), "demo", "name: demo\n", resolved, manifest())
    root = tmp_path / "sweeps" / "demo"
    assert s.uri == str(root) and s.name == "demo" and s.is_local
    assert {p.name for p in root.iterdir()} == {
        "recipe.yaml", "recipe.resolved.json", "manifest.json", "traces",
    }  # fmt: skip
    assert s.read_recipe_text() == "name: demo\n"
    # inf survives the JSON round trip, and schema_version is stripped on read
    assert s.read_resolved() == resolved
    assert math.isinf(s.read_resolved()["job"]["loss"]["eps_high"])
    assert s.optuna_sqlite_path() == str(root / "optuna.db")
    assert s.read_status() == {}


def test_relative_storage_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = SweepStore.create("sweeps", "x", "", {}, {})
    assert s.uri == str(tmp_path / "sweeps" / "x")
    assert SweepStore(f"file://{tmp_path}/sweeps/x").uri == s.uri


def test_create_refuses_existing_unless_resume(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "a", "first\n", {"name": "a"}, {})
    with pytest.raises(InputError, match="exists and is not empty"):
        SweepStore.create(str(tmp_path), "a", "second\n", {"name": "a"}, {})
    again = SweepStore.create(str(tmp_path), "a", "second\n", {"name": "a"}, {}, resume=True)
    assert again.uri == s.uri
    assert again.read_recipe_text() == "first\n"  # resume keeps the original recipe
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "junk.txt").write_text("x")
    with pytest.raises(InputError):  # resume of something that is not a sweep dir
        SweepStore.create(str(tmp_path), "b", "", {}, {}, resume=True)
    (tmp_path / "c").mkdir()  # an existing empty dir is fine
    SweepStore.create(str(tmp_path), "c", "", {}, {})


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "..", ".", ".hidden", "", "a..b", "x" * 101, "a\\b", "/abs", "a b"]
)
def test_name_escapes_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match="sweep name"):
        SweepStore.create(str(tmp_path / "s"), name, "", {}, {})
    assert not (tmp_path / "s").exists()


def test_open_rejects_non_sweep_dirs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such sweep directory") as missing:
        SweepStore.open(str(tmp_path / "nope"))
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a sweep directory") as plain:
        SweepStore.open(str(tmp_path / "plain"))
    assert "\n" not in str(missing.value) and "\n" not in str(plain.value)
    s = SweepStore.create(str(tmp_path), "ok", "", {"name": "ok"}, {})
    assert SweepStore.open(s.uri).uri == s.uri


# --------------------------------------------------------------------------- tables


def test_trials_roundtrip_and_param_typing(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "t", "", {}, {})
    rows = [
        {"trial": 0, "state": "COMPLETE", "p.f": 0.1, "p.i": 50, "p.mix": 0.2, "p.b": True,
         "value": 0.5, "seeds": [0, 1], "started_at": "2025-01-01T00:00:00", "ended_at": 1.7e9},
        {"trial": 1, "state": "RUNNING", "p.f": math.inf, "p.i": 100, "p.mix": "auto",
         "p.b": False, "value": None, "seeds": [0], "error": None},
        {"trial": 2, "state": "FAIL", "p.f": None, "p.i": None, "p.mix": True, "p.b": None,
         "value": math.nan, "seeds": None, "error": "boom", "user_note": "x"},
    ]  # fmt: skip
    s.write_trials(rows, ["p.f", "p.i", "p.mix", "p.b"])
    df = pd.read_parquet(tmp_path / "t" / "trials.parquet")  # plain pandas
    assert list(df.columns[:6]) == ["trial", "state", "p.f", "p.i", "p.mix", "p.b"]
    assert df["p.f"].dtype == "float64" and math.isinf(df["p.f"][1]) and math.isnan(df["p.f"][2])
    assert df["p.i"].tolist()[:2] == [50, 100]
    assert df["p.mix"].tolist() == ["0.2", "auto", "true"]
    assert [decode_param(v) for v in df["p.mix"]] == [0.2, "auto", True]
    assert df["p.b"].tolist()[:2] == [True, False]
    assert math.isnan(df["value"][1]) and math.isnan(df["value"][2]) and df["value"][0] == 0.5
    assert list(df["seeds"][0]) == [0, 1] and df["seeds"][2] is None
    assert str(df["started_at"].dtype) == "datetime64[us, UTC]"
    assert df["started_at"][0] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert df["ended_at"][0] == pd.Timestamp(1.7e9, unit="s", tz="UTC")
    assert df["error"].tolist()[2] == "boom" and df["user_note"].tolist()[2] == "x"
    assert s.read_trials()["trial"].tolist() == [0, 1, 2]


def test_param_key_collision_rejected(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "t", "", {}, {})
    with pytest.raises(ValueError, match="collide"):
        s.write_trials([{"trial": 0, "state": "COMPLETE"}], ["value"])


def test_empty_readers_have_columns(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "t", "", {}, {})
    assert s.read_trials().empty and "value" in s.read_trials().columns
    assert s.read_runs().empty and "attempt" in s.read_runs().columns
    assert s.read_traces().empty and "step" in s.read_traces().columns


def test_runs_roundtrip(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "r", "", {}, {})
    s.write_runs(
        [
            {"trial": 0, "seed": 0, "attempt": 1, "state": "COMPLETE", "worker": "w", "node": 7},
            {"trial": 0, "seed": 1, "attempt": 2, "state": "RUNNING"},
        ]
    )
    df = pd.read_parquet(tmp_path / "r" / "runs.parquet")
    assert df[["trial", "seed", "attempt"]].values.tolist() == [[0, 0, 1], [0, 1, 2]]
    assert df["node"].tolist()[0] == "7" and df["worker"].isna().tolist() == [False, True]


# --------------------------------------------------------------------------- traces


def test_trace_parts_and_resumed_counters(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "tr", "", {}, {})
    s.append_trace(3, 0, 1, [{"step": 0, "entropy": 1.0}])
    s.append_trace(3, 0, 1, [{"step": 1, "entropy": 0.9}])
    s.append_trace(3, 1, 1, [{"step": 0, "entropy": 1.1}])
    s.append_trace(3, 0, 1, [])  # nothing to write: no file
    assert s.trace_files() == [
        "t000003-s0-a1-p00000.parquet",
        "t000003-s0-a1-p00001.parquet",
        "t000003-s1-a1-p00000.parquet",
    ]
    resumed = SweepStore.open(s.uri)  # a new process: counters come from the files
    resumed.append_trace(3, 0, 1, [{"step": 2, "entropy": 0.8}])
    resumed.append_trace(3, 0, 2, [{"step": 0, "entropy": 1.0}])
    assert "t000003-s0-a1-p00002.parquet" in resumed.trace_files()
    assert "t000003-s0-a2-p00000.parquet" in resumed.trace_files()
    part = pd.read_parquet(tmp_path / "tr" / "traces" / "t000003-s0-a1-p00002.parquet")
    assert part.to_dict("records") == [
        {"trial": 3, "seed": 0, "attempt": 1, "step": 2, "entropy": 0.8}
    ]
    with pytest.raises(ValueError, match="step"):
        s.append_trace(3, 0, 1, [{"entropy": 1.0}])


def test_read_traces_unifies_sorts_and_filters(tmp_path: Path) -> None:
    s = build_sweep(tmp_path)
    every = s.read_traces(completed_only=False)
    done = s.read_traces()
    # 3 complete trials x 2 seeds x 11 steps; the FAILed attempts are not in `done`
    assert len(done) == 66 and len(every) == 66 + 2 * 11 + 3
    assert set(done["trial"]) == {0, 1, 2}
    assert set(done.loc[done["trial"] == 1, "attempt"]) == {1, 2}  # seed 1 is attempt 1
    assert not ((done["trial"] == 1) & (done["seed"] == 0) & (done["attempt"] == 1)).any()
    keys = ["trial", "seed", "attempt", "step"]
    assert done[keys].equals(done[keys].sort_values(keys).reset_index(drop=True))
    # a part with a new metric column: unified, the missing values are NaN
    s.append_trace(0, 0, 1, [{"step": 11, "pass_at_8": 0.9}])
    df = s.read_traces()
    assert df["pass_at_8"].notna().sum() == 1
    last = df[(df.trial == 0) & (df.seed == 0) & (df.step == 11)].iloc[0]
    assert last["pass_at_8"] == 0.9 and math.isnan(last["entropy"])
    assert df["entropy"].dtype == "float64"


def test_duplicate_steps_keep_the_last_written(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "d", "", {}, {})
    s.append_trace(0, 0, 1, [{"step": 0, "m": 1.0}, {"step": 1, "m": 2.0}])
    s.append_trace(0, 0, 1, [{"step": 1, "m": 3.0}])
    s.write_runs([{"trial": 0, "seed": 0, "attempt": 1, "state": "COMPLETE"}])
    assert s.read_traces()["m"].tolist() == [1.0, 3.0]


def test_readers_ignore_hidden_and_temp_files(tmp_path: Path) -> None:
    s = build_sweep(tmp_path)
    traces = tmp_path / "demo" / "traces"
    (traces / ".t000000-s0-a1-p00009.parquet.tmp-abc").write_bytes(b"PAR1 half written")
    (traces / "_tmp.parquet").write_bytes(b"junk")
    assert len(s.read_traces()) == 66


# --------------------------------------------------------------------------- crash safety


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = build_sweep(tmp_path)
    before = (tmp_path / "demo" / "trials.parquet").read_bytes()

    def half_then_crash(path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(store_mod, "_write_file", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        s.write_trials([{"trial": 9, "state": "COMPLETE"}], [])
    with pytest.raises(OSError, match="disk full"):
        s.append_trace(0, 0, 1, [{"step": 99, "entropy": 0.1}])
    monkeypatch.undo()
    assert (tmp_path / "demo" / "trials.parquet").read_bytes() == before
    assert s.read_trials()["trial"].tolist() == [0, 1, 2, 3]
    assert 99 not in s.read_traces()["step"].tolist()
    assert not [p for p in all_files(tmp_path) if p.name.startswith(".")]

    def no_rename(src: Any, dst: Any) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(store_mod.os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        s.write_status({"counts": {}})
    monkeypatch.undo()
    assert s.read_status()["counts"] == {"COMPLETE": 3, "FAIL": 1}
    assert not [p for p in all_files(tmp_path) if p.name.startswith(".")]


def test_no_temp_files_and_versions_everywhere(tmp_path: Path) -> None:
    build_sweep(tmp_path)
    files = all_files(tmp_path)
    assert not [p for p in files if p.name.startswith(".") or ".tmp" in p.name]
    parquet = [p for p in files if p.suffix == ".parquet"]
    assert len(parquet) > 10
    for p in parquet:
        assert pq.read_schema(p).metadata[b"sweeper.schema_version"] == b"1"
    for p in [p for p in files if p.suffix == ".json"]:
        assert json.loads(p.read_text())["schema_version"] == 1


def test_status_and_json(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "j", "", {}, {})
    s.write_status({"counts": {"RUNNING": 2}, "best": {"trial": 1, "value": math.inf}})
    st = s.read_status()
    assert st["counts"] == {"RUNNING": 2} and math.isinf(st["best"]["value"])
    assert pd.Timestamp(st["updated_at"]).tzinfo is not None
    s.write_json("extra.json", {"when": pd.Timestamp("2025-01-01", tz="UTC")})
    assert s.read_json("extra.json")["when"].startswith("2025-01-01")


# --------------------------------------------------------------------------- manifest


def test_manifest_does_not_import_torch() -> None:
    code = (
        "import sys; from sweeper.store import manifest; m = manifest({'k': 1}); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert m['versions']['python'] and m['k'] == 1 and m['host'] and m['created_at']; "
        "assert 'pyarrow' in m['versions']"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert manifest()["versions"]["python"]
    sha = manifest()["git_sha"]
    assert sha is None or len(sha) == 40


def test_read_json_of_a_missing_file_is_none(tmp_path: Path) -> None:
    s = SweepStore.create(str(tmp_path), "m", "", {}, {})
    assert s.read_json("control.json") is None
    s.write_json("control.json", {"stop": True})
    assert s.read_json("control.json") == {"schema_version": 1, "stop": True}


# --------------------------------------------------------------------------- eval samples


def _samples(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "sample": i,
            "prompt": f"{i}+1=",
            "response": f"{tag}{i}",
            "reward": float(i % 2),
            "correct": i % 2 == 1,
        }
        for i in range(n)
    ]


def test_samples_roundtrip_filters_and_layout(tmp_path: Path) -> None:
    s = build_sweep(tmp_path)
    assert list(s.read_samples().columns) == list(SAMPLE_COLUMNS)
    assert s.read_samples().empty
    s.append_samples(1, 0, 1, 10, _samples(3, "b"))
    s.append_samples(0, 1, 2, 0, _samples(2, "a"))
    s.append_samples(0, 1, 2, 10, _samples(2, "c"))
    s.append_samples(0, 1, 2, 20, [])  # nothing to write
    names = sorted(p.name for p in (tmp_path / "demo" / "samples").iterdir())
    assert names == [
        "t000000-s1-a2-step000000.parquet",
        "t000000-s1-a2-step000010.parquet",
        "t000001-s0-a1-step000010.parquet",
    ]
    df = s.read_samples()
    assert list(df.columns) == list(SAMPLE_COLUMNS)
    assert df[["trial", "step", "sample"]].values.tolist() == [
        [0, 0, 0], [0, 0, 1], [0, 10, 0], [0, 10, 1], [1, 10, 0], [1, 10, 1], [1, 10, 2],
    ]  # fmt: skip
    assert df["response"].tolist()[:3] == ["a0", "a1", "c0"]
    assert df["correct"].tolist()[:2] == [False, True] and df["reward"].dtype == "float64"
    assert s.read_samples(trial=1)["response"].tolist() == ["b0", "b1", "b2"]
    assert s.read_samples(step=10)["trial"].tolist() == [0, 0, 1, 1, 1]
    assert s.read_samples(trial=0, step=0)["response"].tolist() == ["a0", "a1"]
    assert s.read_samples(trial=7).empty
    # Plain pyarrow reads them too, with the schema version.
    table = pq.read_table(tmp_path / "demo" / "samples" / names[0])
    assert table.schema.metadata[b"sweeper.schema_version"] == b"1"
    # Traces are untouched by samples.
    assert "response" not in s.read_traces(completed_only=False).columns


def test_samples_are_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = build_sweep(tmp_path)
    s.append_samples(0, 0, 1, 0, _samples(2, "ok"))

    def half_then_crash(path: Path, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(store_mod, "_write_file", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        s.append_samples(0, 0, 1, 5, _samples(2, "lost"))
    monkeypatch.undo()
    assert not [p for p in all_files(tmp_path) if p.name.startswith(".")]
    assert s.read_samples()["response"].tolist() == ["ok0", "ok1"]  # the half file never shows
    with pytest.raises(ValueError, match="response"):
        s.append_samples(0, 0, 1, 6, [{"prompt": "p", "reward": 1.0, "correct": True}])
    assert len(list((tmp_path / "demo" / "samples").iterdir())) == 1
