"""A submitted sweep whose Ray Job fails says so, on a real multi-node Ray cluster on 127.0.0.1
with token auth (see conftest.py).

The failure is the one a new user meets: the cluster's ``python`` lacks sweeper's dependencies.
It is reproduced the way a user would configure it: a cluster file whose ``runtime_env.env_vars``
puts first on the job's PATH the ``bin/`` of a bare venv (``python -m venv``, nothing
installed), so the job's ``python -m sweeper.cli`` dies at ``import typer``. Then ``submit
--wait``, ``status`` and ``watch`` print FAILED with the ``ModuleNotFoundError`` line and exit 1.
A healthy submitted sweep with ``--wait`` returns (exit 0) once the controller's status.json
exists.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from sweeper.cli import app
from sweeper.store import SweepStore
from tests.integration.conftest import LoopbackCluster
from tests.integration.test_cluster_mode import write_recipe

pytest.importorskip("ray")


def sweeper(*args: str, env: dict[str, str]) -> Result:
    """The CLI in this process, with ``env`` as the environment (a subprocess would spend
    10-20 s of a loaded test machine importing Ray and sweeper, each call)."""
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with nothing installed: its ``python`` has the standard library only."""
    path = tmp_path_factory.mktemp("bare") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    out = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import typer"], capture_output=True, text=True
    )
    assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr  # truly bare
    return path


def cluster_file(tmp_path: Path, cluster: LoopbackCluster, bare: Path) -> str:
    """A cluster file for the loopback cluster whose job environment finds the bare venv's
    ``python`` first (Ray expands ``${PATH}`` in ``env_vars``)."""
    path = tmp_path / "cluster-bare-python.yaml"  # not the recipe's file name
    doc = {
        "name": "bare-python",
        "kind": "ray",
        "address": cluster.jobs_url,
        "runtime_env": {"env_vars": {"PATH": f"{bare / 'bin'}:${{PATH}}"}},
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_job_whose_python_lacks_sweeper_dependencies_says_failed(
    loopback_cluster: LoopbackCluster, bare_venv: Path, tmp_path: Path
) -> None:
    cluster = loopback_cluster
    recipe = write_recipe(tmp_path, "bare-python", steps=3, step_seconds=0.0, seeds=1)
    clusters = cluster_file(tmp_path, cluster, bare_venv)
    env = cluster.env()

    out = sweeper("submit", recipe, "--cluster", clusters, "--wait", "--timeout", "90", env=env)
    assert out.exit_code == 1, out.output
    assert "submitted bare-python" in out.stdout
    assert "FAILED: controller job bare-python is FAILED" in out.stderr
    assert "ModuleNotFoundError: No module named 'typer'" in out.stderr
    assert cluster.job("bare-python")["status"] == "FAILED"
    sweep = tmp_path / "sweeps" / "bare-python"
    assert SweepStore.open(str(sweep)).read_status()["state"] == "submitted"  # no controller

    out = sweeper("status", str(sweep), env=env)
    assert out.exit_code == 1, out.output
    assert "[FAILED]" in out.stdout and "[submitted]" not in out.stdout
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "FAILED: controller job" in line)
    assert lines[at + 1].strip() == "ModuleNotFoundError: No module named 'typer'"  # first
    tail = [line.strip() for line in lines[at + 3 :]]  # then the log's last lines
    assert "Traceback (most recent call last):" in tail and "import typer" in tail

    out = sweeper("watch", str(sweep), "--interval", "0.2", env=env)
    assert out.exit_code == 1, out.output
    assert "ModuleNotFoundError: No module named 'typer'" in out.stdout

    # A token the cluster refuses: one line saying so, and no claim of failure.
    out = sweeper("status", str(sweep), env={**env, "RAY_AUTH_TOKEN": "0" * 64})
    assert out.exit_code == 0, out.output
    assert "FAILED" not in out.stdout
    assert len([line for line in out.stdout.splitlines() if "cannot ask" in line]) == 1


def test_submit_wait_returns_once_the_controller_wrote_its_status(
    loopback_cluster: LoopbackCluster, tmp_path: Path
) -> None:
    cluster = loopback_cluster
    recipe = write_recipe(tmp_path, "healthy-wait", steps=3, step_seconds=0.0, seeds=1)
    args = ("--address", cluster.jobs_url, "--wait", "--timeout", "150")
    out = sweeper("submit", recipe, *args, env=cluster.env())
    assert out.exit_code == 0, out.output
    sweep = tmp_path / "sweeps" / "healthy-wait"
    assert "controller started" in out.stdout and f"{sweep}/status.json" in out.stdout
    status = SweepStore.open(str(sweep)).read_status()
    assert status["state"] in ("running", "finished")  # written by the controller
    assert status["controller"]["pid"]  # only the controller records itself
    assert cluster.wait_job("healthy-wait", timeout=180)["status"] == "SUCCEEDED"
    out = sweeper("status", str(sweep), env=cluster.env())
    assert out.exit_code == 0 and "[finished]" in out.stdout, out.output
