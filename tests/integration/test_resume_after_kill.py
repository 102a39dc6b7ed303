"""A controller killed at any moment resumes with `sweeper resume` (DESIGN §4).

`sweeper run` runs in a subprocess in its own session; once a trial has completed, the whole
process group -- the controller and the local Ray it started -- gets SIGKILL. Then `sweeper
resume` finishes the sweep: every grid point completes exactly once, trials finished before the
kill are kept as they were, no completed attempt's trace rows are duplicated or lost, Optuna has
no trial left RUNNING, and no half-written file is visible in the sweep dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from sweeper.store import SweepStore
from tests.integration.conftest import kill_marked, marked_pids, sweeper_cli

pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")

STEPS = 30


def write_recipe(tmp_path: Path) -> str:
    recipe = {
        "name": "killed",
        "job": {
            "kind": "synthetic",
            "steps": STEPS,
            "step_seconds": 0.15,
            "eval": {"every": 5, "ks": [1], "samples": 4},
        },
        "space": {"loss.eps_low": [0.05, 0.15], "loss.eps_high": [0.2, 0.3]},
        "search": {"kind": "grid", "seeds": 2, "max_concurrent": 2},
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"storage": str(tmp_path / "sweeps"), "max_retries": 1},
    }
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def visible_files(root: Path) -> list[Path]:
    """What a reader sees: files whose names do not start with '.' or '_' (temp files do)."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    ]


def assert_no_half_written_file(root: Path) -> None:
    for path in visible_files(root):
        if path.suffix == ".parquet":
            pq.read_table(path)  # a truncated file fails here
        elif path.suffix == ".json":
            json.loads(path.read_text())


def test_resume_after_sigkill_of_controller_and_ray(
    tmp_path: Path, private_env: tuple[dict[str, str], str]
) -> None:
    env, marker = private_env
    recipe = write_recipe(tmp_path)
    sweep_dir = tmp_path / "sweeps" / "killed"
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 -- closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper.cli", "run", recipe],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the controller and its local Ray
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial completed in 180 s"
            status = SweepStore(str(sweep_dir)).read_status() if sweep_dir.exists() else {}
            if status.get("counts", {}).get("COMPLETE", 0) >= 1 and status.get("jobs_running"):
                break
            time.sleep(0.2)
    finally:
        with_group = os.getpgid(proc.pid) == proc.pid
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert with_group
    time.sleep(1)
    # Ray's worker processes live in process groups of their own; with their raylet gone they
    # exit by themselves within seconds. Whatever is left is ours: end it.
    deadline = time.monotonic() + 15
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill_marked(marker)

    store = SweepStore.open(str(sweep_dir))
    assert store.read_status()["state"] == "running"  # it died without a word
    assert_no_half_written_file(sweep_dir)
    before = store.read_trials()
    kept = before[before["state"] == "COMPLETE"].set_index("trial")
    assert 1 <= len(kept) < 4
    runs_before = store.read_runs()
    assert (runs_before["state"] == "RUNNING").any()  # killed with jobs in flight
    traces_before = store.read_traces()
    traces_before = traces_before[traces_before["trial"].isin(kept.index)].reset_index(drop=True)
    assert len(traces_before) == len(kept) * 2 * (STEPS + 1)

    out = sweeper_cli("resume", str(sweep_dir), env=env, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]

    status = store.read_status()
    assert status["state"] == "finished"
    trials = store.read_trials()
    done = trials[trials["state"] == "COMPLETE"].set_index("trial")
    # Every grid point completed exactly once.
    points = done[["loss.eps_low", "loss.eps_high"]].apply(tuple, axis=1)
    assert sorted(points) == [(0.05, 0.2), (0.05, 0.3), (0.15, 0.2), (0.15, 0.3)]
    # Trials finished before the kill were kept: same numbers, same values, same params.
    pd.testing.assert_frame_equal(
        done.loc[kept.index, ["loss.eps_low", "loss.eps_high", "value"]],
        kept[["loss.eps_low", "loss.eps_high", "value"]],
    )
    # Interrupted trials are closed with a reason (and their configs ran again as new trials).
    others = trials[trials["state"] != "COMPLETE"]
    assert set(others["state"]) <= {"FAIL"}
    assert others["error"].str.contains("interrupted").all()

    # Each (trial, seed) of a COMPLETE trial: exactly one COMPLETE attempt, with steps
    # 0..STEPS once each.
    runs = store.read_runs()
    assert not (runs["state"] == "RUNNING").any()
    ok = runs[(runs["state"] == "COMPLETE") & runs["trial"].isin(done.index)]
    assert sorted(map(tuple, ok[["trial", "seed"]].to_numpy())) == sorted(
        (t, s) for t in done.index for s in (0, 1)
    )
    traces = store.read_traces()  # completed attempts only
    traces = traces[traces["trial"].isin(done.index)].reset_index(drop=True)
    assert len(traces) == 4 * 2 * (STEPS + 1)
    for (trial, seed), rows in traces.groupby(["trial", "seed"]):
        assert rows["attempt"].nunique() == 1
        assert list(rows["step"]) == list(range(STEPS + 1)), (trial, seed)
    # The rows of trials finished before the kill are exactly what they were.
    after = traces[traces["trial"].isin(kept.index)].reset_index(drop=True)
    pd.testing.assert_frame_equal(after[traces_before.columns], traces_before)

    # Optuna: nothing left RUNNING.
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert "RUNNING" not in states and states.count("COMPLETE") == 4
    assert_no_half_written_file(sweep_dir)
