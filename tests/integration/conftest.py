"""Shared fixtures for cluster-mode tests: a real multi-node Ray cluster on 127.0.0.1, an S3
server (moto) on 127.0.0.1, and helpers to run the ``sweeper`` CLI in a subprocess.

The cluster is three ``ray start --block`` processes, each in its own session (so each node is
one process group that we own): a head with 1 CPU, no GPUs and the dashboard (Jobs API) on
127.0.0.1, and two workers with 1 CPU and 2 *logical* GPUs each. Token auth is on
(``RAY_AUTH_MODE=token``, a fresh random ``RAY_AUTH_TOKEN`` for servers and clients alike).
Node death is detected in about two seconds (``RAY_health_check_*``). Every process the cluster
starts inherits a marker variable, so tear-down kills exactly the processes this fixture caused
to exist -- never ``ray stop``.

Ray replaces ``--node-ip-address=127.0.0.1`` with the machine's routable address
(``resolve_ip_for_localhost``); ``ray start`` is therefore launched through a two-line wrapper
that keeps the address as given, so every node binds and advertises loopback only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

VENV_BIN = str(Path(sys.executable).parent)
MARKER = "SWEEPER_TEST_CLUSTER"  # env var every process of a test cluster inherits

# `ray start` that keeps 127.0.0.1 as the node address instead of swapping in the routable IP.
_RAY_START = (
    "import os, sys, ray._private.services as s\n"
    "s.resolve_ip_for_localhost = lambda host: host\n"
    # Ray's own switch, for the processes the node starts (agents, workers, job drivers): off,
    # it keeps 127.0.0.1 too. Here, after import, `ray start` still allows worker nodes.
    "os.environ['RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER'] = '0'\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv = ['ray', *sys.argv[1:]]\n"
    "main()\n"
)

# Node-death detection in ~2 s instead of Ray's default ~30 s.
FAST_HEALTH_CHECK = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_timeout_ms": "1000",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    """The environment for sweeper/Ray subprocesses: the venv first on PATH (so a Ray Job's
    ``python`` is the venv's), no stray cluster address, token auth on."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sweeper_cli(
    *args: str, env: dict[str, str], timeout: float = 120, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sweeper.cli ARGS`` and return the finished process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "sweeper.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def marked_pids(marker_value: str) -> list[int]:
    """PIDs of this user's processes whose environment carries ``MARKER=marker_value``."""
    needle = f"{MARKER}={marker_value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def kill_marked(marker_value: str) -> None:
    """SIGKILL every process carrying the marker (the backstop of every tear-down here)."""
    for _ in range(3):
        pids = marked_pids(marker_value)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


@dataclass
class LoopbackCluster:
    """A running multi-node Ray cluster on 127.0.0.1 (see the module docstring)."""

    root: Path
    port: int
    dashboard_port: int
    token: str
    marker: str
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def jobs_url(self) -> str:
        """The Ray Jobs API (dashboard) URL: what ``sweeper submit --address`` takes."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client (the sweeper CLI) of this cluster: the token included."""
        return base_env(**{"RAY_AUTH_TOKEN": self.token, MARKER: self.marker, **extra})

    # ------------------------------------------------------------------ nodes

    def _start(self, name: str, args: list[str], **env: str) -> None:
        temp = self.root / name
        temp.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 -- lives as long as the node
        # Nodes sharing one host need their own agent ports (Ray's defaults are fixed numbers).
        ports = [
            f"--{opt}={free_port()}"
            for opt in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                        "runtime-env-agent-port", "metrics-export-port")
        ]  # fmt: skip
        self.nodes[name] = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RAY_START,
                "start",
                "--block",
                *args,
                *ports,
                "--node-ip-address=127.0.0.1",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
                "--object-store-memory=80000000",
            ],
            env=self.env(**FAST_HEALTH_CHECK, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the node, killable as one
        )

    def start_head(self) -> None:
        self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                "--num-cpus=1",
                "--num-gpus=0",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
            DASHBOARD_METRIC_PORT=str(free_port()),
            AUTOSCALER_METRIC_PORT=str(free_port()),
        )

    def add_worker(self, name: str) -> None:
        """Start a worker node (1 CPU, 2 logical GPUs) named ``name``."""
        self._start(name, [f"--address={self.gcs_address}", "--num-cpus=1", "--num-gpus=2"])

    def worker_names(self) -> list[str]:
        """Worker nodes whose ``ray start`` process is still alive."""
        return [n for n, p in self.nodes.items() if n != "head" and p.poll() is None]

    def ensure_workers(self, count: int = 2, timeout: float = 120) -> None:
        """Start worker nodes until at least ``count`` are alive and registered."""
        i = len(self.nodes)
        while len(self.worker_names()) < count:
            self.add_worker(f"w{i}")
            i += 1
        self.wait_nodes(count + 1, timeout)

    def kill_node(self, name: str) -> None:
        """SIGKILL every process of node ``name`` at once: its process group (raylet, agents)
        and its descendants (Ray starts worker processes in process groups of their own)."""
        import psutil

        proc = self.nodes[name]
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def node_of_pid(self, pid: int) -> str | None:
        """The node that started process ``pid`` (e.g. a worker actor), found through its
        ancestors' process groups."""
        import psutil

        groups = {proc.pid: name for name, proc in self.nodes.items()}
        try:
            chain = [psutil.Process(pid), *psutil.Process(pid).parents()]
            for p in chain:
                name = groups.get(os.getpgid(p.pid))
                if name is not None:
                    return name
        except (psutil.NoSuchProcess, ProcessLookupError):
            return None
        return None

    # ------------------------------------------------------------------ HTTP (Jobs API)

    def http(self, path: str, token: str | None = "default") -> tuple[int, Any]:
        """GET ``path`` on the dashboard; ``token`` None sends no Authorization header."""
        token = self.token if token == "default" else token
        req = urllib.request.Request(self.jobs_url + path)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read().decode()
                return resp.status, json.loads(body) if body.strip() else None
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def alive_nodes(self) -> int:
        try:
            code, body = self.http("/nodes?view=summary")
        except OSError:
            return 0
        if code != 200 or not isinstance(body, dict):
            return 0
        summary = body.get("data", {}).get("summary", [])
        return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")

    def wait_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.alive_nodes() >= count:
                return
            dead = [n for n, p in self.nodes.items() if p.poll() is not None and n == "head"]
            if dead:
                raise RuntimeError(f"ray head exited: {self.log('head')[-2000:]}")
            time.sleep(1)
        raise RuntimeError(f"{count} nodes not alive after {timeout} s: {self.log('head')[-2000:]}")

    def job(self, submission_id: str) -> dict[str, Any]:
        """The Ray Job's info (``status``: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
        code, body = self.http(f"/api/jobs/{submission_id}")
        assert code == 200, (code, body)
        return dict(body)

    def wait_job(self, submission_id: str, timeout: float = 240) -> dict[str, Any]:
        """Wait until the job reaches a terminal state; returns its info."""
        deadline = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < deadline:
            info = self.job(submission_id)
            if info.get("status") in ("SUCCEEDED", "FAILED", "STOPPED"):
                return info
            time.sleep(1)
        raise AssertionError(f"job {submission_id} still {info.get('status')} after {timeout} s")

    def job_logs(self, submission_id: str) -> str:
        code, body = self.http(f"/api/jobs/{submission_id}/logs")
        return str(body.get("logs", "")) if code == 200 and isinstance(body, dict) else str(body)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ tear-down

    def shutdown(self) -> None:
        """Kill exactly what this cluster started: each node's process group, then any
        straggler carrying the marker (e.g. a Ray Job's driver in its own session)."""
        for proc in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.nodes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in self.nodes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        kill_marked(self.marker)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private SWEEPER_CACHE for the session: the tiny policy's warm start is built once, for
    every RLVR job test module."""
    path = tmp_path_factory.mktemp("sweeper_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWEEPER_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def runner(cache_dir: Path) -> Any:
    """One warm JobRunner (sweeper.rl.job) shared by the RLVR job tests."""
    from sweeper.rl.job import JobRunner

    return JobRunner(cache_dir=cache_dir)


@pytest.fixture(scope="module")
def loopback_cluster() -> Iterator[LoopbackCluster]:
    """A head + two 2-GPU (logical) worker nodes on 127.0.0.1 with token auth; one per module."""
    if shutil.which("ray", path=VENV_BIN) is None:
        pytest.skip("ray CLI not installed")
    # A short private root: Ray's unix socket paths must stay under ~107 characters.
    root = Path(tempfile.mkdtemp(prefix="swp-", dir="/tmp"))
    cluster = LoopbackCluster(
        root=root,
        port=free_port(),
        dashboard_port=free_port(),
        token=secrets.token_hex(32),
        marker=secrets.token_hex(8),
    )
    try:
        cluster.start_head()
        cluster.wait_nodes(1, timeout=180)
        cluster.ensure_workers(2, timeout=180)
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with an empty bucket ``bucket``; the AWS_* variables point
    this process (and subprocesses given ``os.environ``) at it. Yields the endpoint URL."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] not installed")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto's backends live in this process, shared by every server it starts: start empty.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("SWEEPER_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="bucket"
    )
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def private_env() -> Iterator[tuple[dict[str, str], str]]:
    """Environment for ``sweeper`` subprocesses: a short private TMPDIR (Ray's temp dir goes
    there; unix socket paths must stay short) and a marker to find, and at the end kill, every
    process they start. Built from os.environ as the fixtures listed before it left it (e.g.
    moto's AWS_* variables)."""
    tmp = tempfile.mkdtemp(prefix="swp-", dir="/tmp")
    marker = secrets.token_hex(8)
    try:
        yield base_env(TMPDIR=tmp, **{MARKER: marker}), marker
    finally:
        kill_marked(marker)
        shutil.rmtree(tmp, ignore_errors=True)
