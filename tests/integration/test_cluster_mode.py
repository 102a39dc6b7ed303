"""Cluster mode end to end on a real multi-node Ray cluster on 127.0.0.1 (see conftest.py).

`sweeper submit` sends the controller to the cluster as a Ray Job and returns at once; a worker
node killed mid-sweep loses its jobs, which are retried on the other node with attempt 2; the
Ray Job ends SUCCEEDED with every trial accounted for. Also: `sweeper stop` then `sweeper resume
--address` (a new Ray Job), a sweep dir on S3 (moto) read back by status/rank/export, token auth
(a client without the token is refused), a bad address, and what listens where.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.store import SweepStore
from tests.integration.conftest import LoopbackCluster, base_env, sweeper_cli

pytest.importorskip("ray")

runner = CliRunner()


def write_recipe(
    tmp_path: Path,
    name: str,
    *,
    steps: int = 30,
    step_seconds: float = 0.2,
    seeds: int = 2,
    max_concurrent: int = 4,
    run: dict[str, Any] | None = None,
) -> str:
    """A 2x2 grid of the synthetic job with fractional logical GPUs per job."""
    recipe = {
        "name": name,
        "job": {
            "kind": "synthetic",
            "steps": steps,
            "step_seconds": step_seconds,
            "eval": {"every": 5, "ks": [1], "samples": 4},
        },
        "space": {"loss.eps_low": [0.05, 0.15], "loss.eps_high": [0.2, 0.3]},
        "search": {"kind": "grid", "seeds": seeds, "max_concurrent": max_concurrent},
        "objective": {"metric": "mean_at_n", "scope": "last"},
        "run": {
            "storage": str(tmp_path / "sweeps"),
            "max_retries": 2,
            "resources": {"num_cpus": 0, "num_gpus": 0.5},
            **(run or {}),
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def submit(cluster: LoopbackCluster, recipe: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return sweeper_cli("submit", recipe, "--address", cluster.jobs_url, *extra, env=cluster.env())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.3) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out = predicate()
        except (OSError, ValueError, KeyError):  # a file being replaced, not written yet
            out = None
        if out:
            return out
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finished_ok(cluster: LoopbackCluster, submission_id: str) -> dict[str, Any]:
    info = cluster.wait_job(submission_id)
    assert info["status"] == "SUCCEEDED", cluster.job_logs(submission_id)[-4000:]
    return info


def assert_each_job_complete_once(store: SweepStore, steps: int) -> None:
    """Every (trial, seed) of a COMPLETE trial has exactly one COMPLETE attempt, whose trace
    holds steps 0..steps once each."""
    runs = store.read_runs()
    trials = store.read_trials()
    complete = set(trials.loc[trials["state"] == "COMPLETE", "trial"])
    ok = runs[(runs["state"] == "COMPLETE") & runs["trial"].isin(complete)]
    assert not ok.duplicated(["trial", "seed"]).any()
    traces = store.read_traces()  # completed attempts only
    for (trial, seed), rows in traces.groupby(["trial", "seed"]):
        assert trial in complete
        assert rows["attempt"].nunique() == 1
        assert list(rows["step"]) == list(range(steps + 1)), (trial, seed)


# --------------------------------------------------------------------------- bad input


def test_bad_address_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "bad-address")
    out = sweeper_cli("submit", recipe, "--address", "http://127.0.0.1:1", env=base_env())
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot reach the Ray cluster at http://127.0.0.1:1" in lines[0]
    assert not (tmp_path / "sweeps").exists()


def test_sweep_name_cannot_escape_storage(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "escape")
    for verb in (["run"], ["submit", "--address", "http://127.0.0.1:1"]):
        result = runner.invoke(app, [*verb, recipe, "--set", "name=../x"])
        assert result.exit_code == 2, result.output
        assert "name" in result.output
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "x").exists()


def test_remote_storage_needs_no_optuna_storage(moto_s3: str, tmp_path: Path) -> None:
    """A sweep on s3:// needs no database (the study is rebuilt from the sweep dir): submit
    goes past the storage checks and stops at the address that does not answer."""
    recipe = write_recipe(tmp_path, "no-optuna")
    args = ["submit", recipe, "--storage", "s3://bucket/sweeps", "--address", "http://127.0.0.1:1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "optuna_storage" not in result.output and "127.0.0.1:1" in result.output, result.output


# --------------------------------------------------------------------------- security


def test_embedded_ray_listens_on_loopback_only() -> None:
    """What `sweeper run` starts (ray_session's private local Ray): GCS on 127.0.0.1, and no
    process of it listens on anything but loopback."""
    probe = (
        "import json, psutil\n"
        "from sweeper.controller import ray_session\n"
        "with ray_session() as gcs:\n"
        "    me = psutil.Process()\n"
        "    pids = {me.pid} | {p.pid for p in me.children(recursive=True)}\n"
        "    ips = sorted({c.laddr.ip for c in psutil.net_connections('inet')\n"
        "                  if c.status == 'LISTEN' and c.pid in pids})\n"
        "    print(json.dumps({'gcs': gcs, 'listen': ips}))\n"
    )
    tmp = tempfile.mkdtemp(prefix="swr-", dir="/tmp")  # Ray's temp dir goes here; short path
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe],
            env=base_env(TMPDIR=tmp),
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["gcs"].startswith("127.0.0.1:")
    assert seen["listen"] and all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip in seen["listen"])


def test_cluster_refuses_clients_without_the_token(
    loopback_cluster: LoopbackCluster, tmp_path: Path
) -> None:
    cluster = loopback_cluster
    assert cluster.http("/api/jobs/")[0] == 200
    assert cluster.http("/api/jobs/", token=None)[0] == 401
    assert cluster.http("/api/jobs/", token="0" * 64)[0] == 403
    recipe = write_recipe(tmp_path, "wrong-token")
    out = sweeper_cli(
        "submit", recipe, "--address", cluster.jobs_url, env=cluster.env(RAY_AUTH_TOKEN="0" * 64)
    )
    assert out.returncode == 2, out.stderr
    assert len([line for line in out.stderr.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "sweeps").exists()


# --------------------------------------------------------------------------- submit / stop


def test_stop_then_resume_on_the_cluster(loopback_cluster: LoopbackCluster, tmp_path: Path) -> None:
    cluster = loopback_cluster
    cluster.ensure_workers(2)
    recipe = write_recipe(
        tmp_path, "stop-me", steps=40, step_seconds=0.25, seeds=1, max_concurrent=2
    )
    out = submit(cluster, recipe)
    assert out.returncode == 0, out.stderr
    store = SweepStore.open(str(tmp_path / "sweeps" / "stop-me"))
    wait_for(lambda: store.read_status().get("counts", {}).get("COMPLETE", 0) >= 1, 180, "a trial")
    result = runner.invoke(app, ["stop", store.uri])
    assert result.exit_code == 0, result.output
    finished_ok(cluster, "stop-me")
    status = store.read_status()
    assert status["state"] == "stopped"
    trials = store.read_trials()
    kept = trials[trials["state"] == "COMPLETE"].set_index("trial")["value"]
    assert 1 <= len(kept) < 4 and kept.notna().all()

    # The controller ended: `resume --address <Jobs API>` submits it again as a new Ray Job.
    out = sweeper_cli("resume", store.uri, "--address", cluster.jobs_url, env=cluster.env())
    assert out.returncode == 0, out.stderr
    assert "stop-me-r2" in out.stdout
    finished_ok(cluster, "stop-me-r2")
    assert store.read_status()["state"] == "finished"
    trials = store.read_trials()
    done = trials[trials["state"] == "COMPLETE"]
    points = done[["loss.eps_low", "loss.eps_high"]].apply(tuple, axis=1)
    assert len(points) == 4 and points.is_unique
    after = done.set_index("trial")["value"]
    pd.testing.assert_series_equal(after.loc[kept.index], kept)  # kept, not rerun
    assert_each_job_complete_once(store, steps=40)
    history = json.loads((Path(store.uri) / "submission.json").read_text())["submissions"]
    assert [h["id"] for h in history] == ["stop-me", "stop-me-r2"]


def test_submit_to_s3_storage(
    loopback_cluster: LoopbackCluster, moto_s3: str, tmp_path: Path
) -> None:
    """The controller on the cluster writes the sweep dir to S3 (endpoint and keys forwarded to
    the job); Optuna lives in a sqlite file; status/rank/export work from the s3:// URI alone."""
    cluster = loopback_cluster
    cluster.ensure_workers(1)
    optuna_db = tmp_path / "optuna.db"
    recipe = write_recipe(
        tmp_path,
        "on-s3",
        steps=8,
        step_seconds=0.0,
        seeds=1,
        run={"optuna_storage": f"sqlite:///{optuna_db}"},
    )
    out = submit(cluster, recipe, "--storage", "s3://bucket/sweeps")
    assert out.returncode == 0, out.stderr
    finished_ok(cluster, "on-s3")
    uri = "s3://bucket/sweeps/on-s3"
    assert not (tmp_path / "sweeps").exists() and optuna_db.exists()

    result = runner.invoke(app, ["status", uri])
    assert result.exit_code == 0 and "finished" in result.output, result.output
    result = runner.invoke(app, ["rank", uri])
    assert result.exit_code == 0 and "0.15" in result.output, result.output
    result = runner.invoke(app, ["export", uri, "--format", "yaml", "--out", str(tmp_path / "ex")])
    assert result.exit_code == 0, result.output
    exported = list((tmp_path / "ex").glob("*.yaml"))
    assert len(exported) == 1
    best = yaml.safe_load(exported[0].read_text())
    # The synthetic landscape peaks at eps_low 0.15, eps_high 0.3 (see sweeper.synthetic).
    assert (best["job"]["loss"]["eps_low"], best["job"]["loss"]["eps_high"]) == (0.15, 0.3)
    store = SweepStore.open(uri)
    assert (store.read_trials()["state"] == "COMPLETE").sum() == 4


# --------------------------------------------------------------------------- node loss


def test_submitted_sweep_survives_node_loss(
    loopback_cluster: LoopbackCluster, tmp_path: Path
) -> None:
    cluster = loopback_cluster
    cluster.ensure_workers(2)
    recipe = write_recipe(tmp_path, "node-loss", steps=30, step_seconds=0.2)
    started = time.monotonic()
    out = submit(cluster, recipe)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 60  # returns at once, without waiting for the sweep
    sweep_dir = tmp_path / "sweeps" / "node-loss"
    assert "node-loss" in out.stdout and str(sweep_dir) in out.stdout
    result = runner.invoke(app, ["status", str(sweep_dir)])
    assert result.exit_code == 0 and "node-loss" in result.output, result.output
    store = SweepStore.open(str(sweep_dir))

    def victim() -> tuple[str, int, int] | None:
        """A worker node running a job that has streamed a few steps: (node, trial, seed)."""
        status = store.read_status()
        runs = store.read_runs()
        for job in status.get("jobs_running", []):
            if job["step"] < 3 or job["attempt"] != 1:
                continue
            row = runs[(runs["trial"] == job["trial"]) & (runs["seed"] == job["seed"])]
            pid = int(str(row.iloc[-1]["worker"]).rsplit(":", 1)[1])
            node = cluster.node_of_pid(pid)
            if node is not None and node != "head":
                return node, job["trial"], job["seed"]
        return None

    node, trial, seed = wait_for(victim, 180, "a job streaming on a worker node")
    cluster.kill_node(node)

    finished_ok(cluster, "node-loss")
    status = store.read_status()
    assert status["state"] == "finished"
    assert status["counts"]["COMPLETE"] == 4 == status["total_trials"]
    trials = store.read_trials()
    assert list(trials["state"]) == ["COMPLETE"] * 4
    runs = store.read_runs()
    died = runs[runs["error"].fillna("").str.contains("worker died")]
    assert len(died) >= 1 and set(died["state"]) == {"FAIL"}
    assert ((died["trial"] == trial) & (died["seed"] == seed)).any()
    for _, row in died.iterrows():
        retry = runs[
            (runs["trial"] == row["trial"])
            & (runs["seed"] == row["seed"])
            & (runs["attempt"] == row["attempt"] + 1)
        ]
        assert len(retry) == 1 and retry.iloc[0]["node"] != row["node"]
    assert (runs.loc[runs["state"] == "COMPLETE", "attempt"] >= 2).any()
    assert_each_job_complete_once(store, steps=30)
    assert len(store.read_traces()) == 4 * 2 * 31
