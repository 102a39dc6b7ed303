"""No database to run: a sweep on s3:// killed and resumed with nothing but its sweep dir, and
the study mirrored into a real PostgreSQL server.

Both tests run ``sweeper run`` in a subprocess in its own session, SIGKILL the whole process
group (the controller and its local Ray) once a trial has completed while jobs run, then
``sweeper resume``. The S3 side is moto's server on 127.0.0.1 (``moto_s3``); PostgreSQL is
Debian's ``postgresql`` server started by the ``postgres_url`` fixture in a temp dir on
127.0.0.1 (as the ``postgres`` user when the tests run as root); without it the test skips,
naming the package.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from sweeper.config.recipe import Recipe
from sweeper.rank import seed_values
from sweeper.search import Search
from sweeper.store import SweepStore
from tests.integration.conftest import (
    free_port,
    kill_marked,
    marked_pids,
    sweeper_cli,
)

pytest.importorskip("ray")
optuna = pytest.importorskip("optuna")

STEPS = 20
EVERY = 5


def write_recipe(tmp_path: Path, name: str, search: dict[str, Any], run: dict[str, Any]) -> str:
    recipe = {
        "name": name,
        "job": {"kind": "synthetic", "steps": STEPS, "step_seconds": 0.15,
                "eval": {"every": EVERY, "ks": [1], "samples": 4}},
        "space": {"loss.eps_low": {"type": "uniform", "low": 0.05, "high": 0.25},
                  "loss.eps_high": [0.2, 0.3]},
        "search": {"seeds": 2, "max_concurrent": 2, **search},
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {"max_retries": 1, **run},
    }  # fmt: skip
    if search.get("kind") == "grid":
        recipe["space"]["loss.eps_low"] = [0.05, 0.15]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def run_kill_resume(recipe: str, uri: str, env: dict[str, str], marker: str, tmp: Path) -> None:
    """``sweeper run`` until a trial completed with jobs running, SIGKILL it all, resume."""
    log = open(tmp / "run.log", "wb")  # noqa: SIM115 -- closed below
    args = [sys.executable, "-m", "sweeper.cli", "run", recipe]
    if uri.startswith("s3://"):
        args += ["--storage", uri.rsplit("/", 1)[0]]
    proc = subprocess.Popen(
        args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial completed in 240 s"
            with contextlib.suppress(Exception):
                status = SweepStore(uri).read_status()
                if status.get("counts", {}).get("COMPLETE", 0) >= 1 and status.get("jobs_running"):
                    break
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    deadline = time.monotonic() + 15
    while marked_pids(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    kill_marked(marker)
    store = SweepStore.open(uri)
    assert store.read_status()["state"] == "running"  # it died without a word
    assert (store.read_runs()["state"] == "RUNNING").any()  # with jobs in flight
    out = sweeper_cli("resume", uri, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert store.read_status()["state"] == "finished"


def check_sweep(store: SweepStore, n_complete: int) -> pd.DataFrame:
    """Every config ends once; values are what the traces say; interrupted trials were rerun."""
    recipe = Recipe.model_validate(store.read_resolved())
    trials = store.read_trials().set_index("trial")
    keys = recipe.param_keys()
    done = trials[trials["state"] == "COMPLETE"]
    assert len(done) == n_complete, trials[["state", "error"]]
    others = trials[trials["state"] != "COMPLETE"]
    assert set(others["state"]) <= {"FAIL"} and others["error"].str.startswith("interrupted").all()
    # An interrupted trial whose params are known ran again, to completion, under a later number.
    for number, row in others.dropna(subset=keys).iterrows():
        same = (done[keys] == row[keys]).all(axis=1)
        assert (done.index[same] > number).any(), number
    # Each completed (trial, seed): one COMPLETE attempt; the value is the seed mean of the
    # objective's last value in the completed traces.
    runs = store.read_runs()
    assert not (runs["state"] == "RUNNING").any()
    ok = runs[(runs["state"] == "COMPLETE") & runs["trial"].isin(done.index)]
    assert len(ok) == len(ok.drop_duplicates(["trial", "seed"])) == 2 * n_complete
    per_seed = seed_values(store.read_traces(), recipe.objective)
    recomputed = per_seed[per_seed["trial"].isin(done.index)].groupby("trial")["value"].mean()
    np.testing.assert_allclose(done["value"].sort_index(), recomputed.sort_index())
    return trials


def check_rebuilt_study(store: SweepStore, trials: pd.DataFrame) -> None:
    """The study rebuilt from the finished sweep dir: params, states, values and intermediate
    values (per eval step, the mean over the seeds' completed traces) as trials.parquet says."""
    recipe = Recipe.model_validate(store.read_resolved())
    search = Search.for_sweep(recipe, store, resume=True)
    study = {t["number"]: t for t in search.trials()}
    search.close()
    assert sorted(study) == list(trials.index)
    traces = store.read_traces()
    means = traces.groupby(["trial", "step"])["mean_at_n"].mean()
    for number, row in trials.iterrows():
        t = study[number]
        assert t["state"] == row["state"], number
        if row["state"] == "COMPLETE":
            assert t["value"] == pytest.approx(row["value"])
            assert t["params"] == {k: row[k] for k in recipe.param_keys()}
            want = means.loc[number].dropna()
            assert list(t["intermediate_values"]) == list(range(0, STEPS + 1, EVERY))
            assert t["intermediate_values"] == pytest.approx(want.to_dict())
        else:
            assert "sweeper_recovered" in t["user_attrs"], number


def test_kill_and_resume_on_s3_without_a_database(
    moto_s3: str, tmp_path: Path, private_env: tuple[dict[str, str], str]
) -> None:
    import boto3

    env, marker = private_env
    search = {"kind": "optuna", "n_trials": 5, "sampler": "random"}
    recipe = write_recipe(tmp_path, "nodb", search, run={})
    uri = "s3://bucket/sweeps/nodb"
    run_kill_resume(recipe, uri, env, marker, tmp_path)

    store = SweepStore.open(uri)
    trials = check_sweep(store, n_complete=5)
    check_rebuilt_study(store, trials)
    client = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="bucket").get("Contents", [])]
    assert not [k for k in keys if "optuna" in k]  # no database, anywhere
    assert not list(tmp_path.rglob("*.db"))


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL server of its own on 127.0.0.1 and a free port (trust auth, user
    ``sweeper``); yields its ``postgresql+psycopg://`` URL and stops it afterwards."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server not installed (Debian package `postgresql`)")
    pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'psycopg[binary]')")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="swpg-", dir="/tmp"))
    if os.getuid() == 0:  # the server refuses to run as root
        user = "postgres" if shutil.which("runuser") else ""
        if not user:
            pytest.skip("running as root without runuser")
        as_user = ["runuser", "-u", user, "--"]
        shutil.chown(root, user)
    data, port = root / "data", free_port()
    run = lambda *a: subprocess.run([*as_user, *map(str, a)], capture_output=True, text=True)  # noqa: E731
    out = run(bin_dir / "initdb", "-D", data, "-U", "sweeper", "--auth=trust", "-E", "UTF8")
    assert out.returncode == 0, out.stderr
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    out = run(bin_dir / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "start")
    assert out.returncode == 0, out.stderr + (root / "log").read_text()
    try:
        yield f"postgresql+psycopg://sweeper@127.0.0.1:{port}/postgres"
    finally:
        run(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_postgresql_mirror_holds_every_trial_across_a_resume(
    postgres_url: str, tmp_path: Path, private_env: tuple[dict[str, str], str]
) -> None:
    env, marker = private_env
    recipe = write_recipe(
        tmp_path, "pg", {"kind": "grid"},
        run={"storage": str(tmp_path / "sweeps"), "optuna_storage": postgres_url},
    )  # fmt: skip
    uri = str(tmp_path / "sweeps" / "pg")
    run_kill_resume(recipe, uri, env, marker, tmp_path)

    store = SweepStore.open(uri)
    trials = check_sweep(store, n_complete=4)
    assert not (tmp_path / "sweeps" / "pg" / "optuna.db").exists()  # the mirror is PostgreSQL
    mirror = optuna.load_study(study_name="pg", storage=postgres_url)
    got = {t.number: t for t in mirror.get_trials(deepcopy=False)}
    assert sorted(got) == list(trials.index)  # every trial once, numbered as the sweep
    for number, row in trials.iterrows():
        t = got[number]
        assert t.state.name == row["state"], number
        if row["state"] == "COMPLETE":
            assert t.value == pytest.approx(row["value"])
            assert t.params == {
                "loss.eps_low": row["loss.eps_low"],
                "loss.eps_high": row["loss.eps_high"],
            }
            assert sorted(t.intermediate_values) == list(range(0, STEPS + 1, EVERY))
        else:
            assert "interrupted" in t.user_attrs["error"]
