"""The controller: runs a sweep's jobs on warm Ray workers and keeps the sweep dir current.

Flow (DESIGN §4): the Optuna study (``sweeper.search.Search``) hands out trials by ask/tell; a
trial is one config run over its seeds; each (trial, seed) job runs on a warm ``JobWorker`` actor
holding the requested resources; rows stream back through ``drain`` long-polls and are written as
atomic trace part files; intermediate eval values go to Optuna's pruner; a pruned trial's jobs
stop within one step. A job that raises fails its trial (error recorded) and the sweep goes on;
a job whose worker dies is retried on another worker with a new ``attempt`` number, up to
``run.max_retries``. Tables and status are rewritten atomically on every state change.

Crash safety, by ordering: an attempt's rows are flushed before runs.parquet says COMPLETE, and a
trial is told to Optuna only after its attempts are recorded. ``resume`` rebuilds its state from
the sweep dir: trials whose every seed has a COMPLETE attempt are finished from their traces;
other unfinished trials are closed and their configs rerun as new trials.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from sweeper.cluster import ClusterConfig
from sweeper.config.job import SAMPLES_KEY
from sweeper.errors import InputError
from sweeper.rank import trial_value
from sweeper.recipe import Recipe
from sweeper.search import Search
from sweeper.store import SweepStore
from sweeper.worker import WORKER_CONCURRENCY, JobWorker

log = logging.getLogger("sweeper.controller")

FLUSH_SECONDS = 2.0  # how often a running job's buffered rows become a trace part file
DRAIN_TIMEOUT = 1.0  # long-poll length of one drain call
STOP_CHECK_SECONDS = 2.0  # how often the controller looks for a `sweeper stop` request
CAPACITY_SECONDS = 5.0  # how long a reading of the cluster's resources is trusted
PUBLISH_SECONDS = 1.0  # status.json refresh for step progress (state changes publish at once)
CONTROL_FILE = "control.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- Ray connection


@contextlib.contextmanager
def ray_session(cluster: ClusterConfig | None = None, address: str | None = None) -> Iterator[str]:
    """Connect to Ray for the duration of a sweep; yields the address.

    Embedded default: a private local instance (``address="local"``, own temp dir, loopback
    only), never an existing cluster found by accident. With ``address`` (or a ``ray`` cluster
    file) it connects there; ``auto`` is what a controller running as a Ray Job uses.
    """
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        yield ray.get_runtime_context().gcs_address
        return
    address = address or (
        cluster.address if cluster is not None and cluster.kind == "ray" else None
    )
    if address:
        target = address.removeprefix("http://").removeprefix("https://")
        if address.startswith("http"):  # a jobs/dashboard URL is not a GCS address
            raise InputError(f"{address}: use the GCS address (host:6379) or ray://host:10001 here")
        try:
            ray.init(address=target, log_to_driver=False)
        except Exception as exc:
            raise InputError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
    else:
        given_temp = cluster.temp_dir if cluster is not None else None
        own_temp = given_temp is None
        temp_dir = given_temp or tempfile.mkdtemp(prefix="sweeper-ray-")
        with _loopback_only():
            ray.init(
                address="local",
                _temp_dir=temp_dir,
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                num_cpus=cluster.num_cpus if cluster is not None else None,
                num_gpus=cluster.num_gpus if cluster is not None else None,  # type: ignore[arg-type]
                log_to_driver=False,
            )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if not address and own_temp:  # the private temp dir sweeper made (logs, sockets)
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Keep ``_node_ip_address="127.0.0.1"`` as given while the embedded Ray starts.

    Ray swaps a loopback node address for the machine's routable one
    (``services.resolve_ip_for_localhost``) unless its multi-node switch
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off. With the swap the GCS, raylet and agents
    listen on every interface; without it they bind 127.0.0.1 only. The switch is read at import
    time, so the module constant is set as well; both are restored afterwards.
    """
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_const = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name] = "0"  # also for the processes ray.init spawns
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env


# --------------------------------------------------------------------------- state


@dataclass
class TrialState:
    """One trial: a config over its seeds."""

    number: int
    params: dict[str, Any]
    seeds: list[int]
    state: str = "RUNNING"
    value: float = math.nan
    error: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    seed_state: dict[int, str] = field(default_factory=dict)
    rows: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # completed attempts
    evals: dict[int, dict[int, float]] = field(default_factory=dict)  # step -> seed -> value
    reported: set[int] = field(default_factory=set)

    @property
    def finished(self) -> bool:
        return self.state in ("COMPLETE", "PRUNED", "FAIL")

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "state": self.state,
            **self.params,
            "value": self.value,
            "seeds": list(self.seeds),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "error": self.error,
        }


@dataclass
class Attempt:
    """One job attempt: (trial, seed, attempt) running on a worker."""

    trial: int
    seed: int
    attempt: int
    run_id: str
    worker: Any
    worker_info: dict[str, Any]
    run_ref: Any
    drain_ref: Any = None
    buffer: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    step: int = -1
    stop_reason: str | None = None  # PRUNED / FAIL / STOPPED when we asked it to stop
    started_at: str = field(default_factory=now_iso)
    run_row: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- controller


class Controller:
    """Runs one sweep to its end (or until stopped) against a connected Ray.

    ``on_update(status)`` is called after every change of state (the CLI renders it).
    """

    def __init__(
        self,
        recipe: Recipe,
        store: SweepStore,
        cluster: ClusterConfig | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        cache_dir: str | None = None,
        fixed_size: bool = True,
    ) -> None:
        self.recipe = recipe
        self.store = store
        self.cluster = cluster
        self.on_update = on_update
        self.cache_dir = cache_dir
        # A fixed-size Ray (the embedded one) can never grow: a job it cannot hold is bad input.
        # A cluster may autoscale: a pending worker is what asks it for a node.
        self.fixed_size = fixed_size
        self._capacity_cache: tuple[float, int] = (-math.inf, 0)
        self.param_keys = recipe.param_keys()
        self.resources = (
            recipe.run.resources
            or (cluster.resources if cluster is not None else None)
            or _default_resources()
        )
        self.trials: dict[int, TrialState] = {}
        self.runs: list[dict[str, Any]] = []
        self.pending: deque[tuple[int, int, int]] = deque()  # (trial, seed, attempt)
        self.attempts: dict[str, Attempt] = {}  # run_id -> attempt in flight
        self.idle: list[tuple[Any, dict[str, Any]]] = []
        self.n_workers = 0
        self.exhausted = False
        self.stopping = False
        self.started_at = now_iso()
        self._dirty = True
        self._progressed = False  # rows arrived since the last publish
        self._last_publish = 0.0
        self._last_stop_check = 0.0
        self._search: Search | None = None
        self._worker_cls: Any = None

    @property
    def search(self) -> Search:
        """The sweep's Optuna study (opened by ``run``)."""
        assert self._search is not None, "Controller.run() opens the search"
        return self._search

    # ------------------------------------------------------------------ public

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run until every trial is finished or a stop is requested; returns the final status."""
        import ray

        self._search = Search.create_or_load(
            self.recipe, self._optuna_url(), study_name=self.recipe.name
        )
        self._worker_cls = ray.remote(max_concurrency=WORKER_CONCURRENCY)(JobWorker)  # type: ignore[call-overload]
        if resume:
            self._restore()
        self.store.write_json(CONTROL_FILE, {"stop": False, "updated_at": now_iso()})
        state = "failed"
        try:
            while True:
                self._check_stop_request()
                if not self.stopping:
                    self._fill()
                if not self.attempts and (self.stopping or (self.exhausted and not self.pending)):
                    break
                self._wait_and_handle()
                self._publish()
            state = "stopped" if self.stopping else "finished"
        finally:
            self._shutdown()
            self._publish(state=state, force=True)
        return self.status(state)

    def status(self, state: str = "running") -> dict[str, Any]:
        """The live status (also written to status.json)."""
        counts = {s: 0 for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
        for t in self.trials.values():
            counts[t.state] = counts.get(t.state, 0) + 1
        done = [t for t in self.trials.values() if t.state == "COMPLETE" and math.isfinite(t.value)]
        best = None
        if done:
            pick = max if self.recipe.objective.mode == "max" else min
            b = pick(done, key=lambda t: t.value)
            best = {"trial": b.number, "value": b.value, "params": b.params}
        return {
            "schema_version": 1,
            "sweep": self.recipe.name,
            "state": state,
            "objective": self.recipe.objective.model_dump(),
            "counts": counts,
            "total_trials": self._expected_trials(),
            "jobs_running": [
                {
                    "trial": a.trial,
                    "seed": a.seed,
                    "attempt": a.attempt,
                    "step": a.step,
                    "steps": self.recipe.job.steps,
                    "worker": a.worker_info.get("host", ""),
                }
                for a in self.attempts.values()
            ],
            "jobs_pending": len(self.pending),
            "best": best,
            "controller": {"host": socket.gethostname(), "pid": os.getpid()},
            "started_at": self.started_at,
            "updated_at": now_iso(),
        }

    # ------------------------------------------------------------------ scheduling

    def _fill(self) -> None:
        """Start jobs while there are free slots; ask Optuna for a trial only when needed."""
        while True:
            worker = self._free_worker()
            if worker is None:
                return
            if not self.pending and not self._ask():
                self.idle.append(worker)
                return
            trial, seed, attempt = self.pending.popleft()
            self._start(worker, trial, seed, attempt)

    def _ask(self) -> bool:
        if self.exhausted:
            return False
        asked = self.search.ask()
        if asked is None:
            self.exhausted = True
            return False
        number, params = asked
        seeds = list(self.recipe.search.seeds)
        self.trials[number] = TrialState(
            number=number,
            params=params,
            seeds=seeds,
            started_at=now_iso(),
            seed_state={s: "WAITING" for s in seeds},
        )
        self.pending.extend((number, s, 1) for s in seeds)
        self._dirty = True
        return True

    def _free_worker(self) -> tuple[Any, dict[str, Any]] | None:
        if self.idle:
            return self.idle.pop()
        if self.n_workers >= self._capacity():
            return None
        r = self.resources
        worker = self._worker_cls.options(
            num_cpus=r.num_cpus, num_gpus=r.num_gpus, resources=r.custom or None
        ).remote(cache_dir=self.cache_dir)
        self.n_workers += 1
        return worker, {}

    def _capacity(self) -> int:
        """Concurrent jobs: max_concurrent, capped by what the cluster can hold at once
        (re-read every few seconds: nodes come and go)."""
        import ray

        checked_at, cached = self._capacity_cache
        if time.monotonic() - checked_at < CAPACITY_SECONDS:
            return cached
        total = ray.cluster_resources()
        r = self.resources
        cap = self.recipe.search.max_concurrent
        needs = {"CPU": r.num_cpus, "GPU": r.num_gpus, **r.custom}
        for name, amount in needs.items():
            if amount > 0:
                cap = min(cap, int(total.get(name, 0.0) // amount + 1e-9))
        if cap == 0 and self.fixed_size:
            raise InputError(
                f"no node can hold one job's resources {needs} (this Ray has {dict(total)})"
            )
        if cap == 0:
            log.warning("the cluster cannot hold a job %s yet; waiting for it to scale up", needs)
            cap = 1  # one pending worker asks an autoscaler for a node
        self._capacity_cache = (time.monotonic(), cap)
        return cap

    def _start(
        self, worker: tuple[Any, dict[str, Any]], trial: int, seed: int, attempt: int
    ) -> None:
        handle, info = worker
        t = self.trials[trial]
        job = self.recipe.job_for(t.params).model_dump(mode="json")
        run_id = f"{trial}-{seed}-{attempt}-{uuid.uuid4().hex[:6]}"
        a = Attempt(
            trial, seed, attempt, run_id, handle, info, handle.run.remote(run_id, job, seed)
        )
        if not info:
            info.update(self._worker_info(handle))
        a.drain_ref = handle.drain.remote(run_id, DRAIN_TIMEOUT)
        a.run_row = {
            "trial": trial,
            "seed": seed,
            "attempt": attempt,
            "state": "RUNNING",
            "worker": f"{info.get('host', '')}:{info.get('pid', '')}",
            "node": info.get("node", ""),
            "started_at": a.started_at,
            "ended_at": None,
            "error": None,
        }
        self.runs.append(a.run_row)
        self.attempts[run_id] = a
        t.seed_state[seed] = "RUNNING"
        self._write_runs()

    @staticmethod
    def _worker_info(handle: Any) -> dict[str, Any]:
        import ray

        try:
            return dict(ray.get(handle.info.remote(), timeout=120))
        except Exception:  # a worker that dies on start is handled when its job fails
            return {}

    # ------------------------------------------------------------------ streaming

    def _wait_and_handle(self) -> None:
        import ray

        if not self.attempts:
            time.sleep(0.05)
            return
        by_ref = {a.drain_ref: a for a in self.attempts.values()}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=DRAIN_TIMEOUT / 2)
        for ref in ready:
            self._on_drain(by_ref[ref], ref)
        for a in list(self.attempts.values()):
            if a.buffer and time.monotonic() - a.last_flush > FLUSH_SECONDS:
                self._flush(a)

    def _on_drain(self, a: Attempt, ref: Any) -> None:
        import ray

        try:
            out = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            self._on_worker_died(a, exc)
            return
        for row in out["rows"]:
            self._on_row(a, row)
        result = out["result"]
        if result is None:
            a.drain_ref = a.worker.drain.remote(a.run_id, DRAIN_TIMEOUT)
            return
        self._flush(a)
        self._end_attempt(a, result)

    def _on_row(self, a: Attempt, row: dict[str, Any]) -> None:
        self._progressed = True
        # Logged eval completions (eval.log_samples) go to samples/, never into the traces.
        samples = row.pop(SAMPLES_KEY, None)
        if samples:
            self.store.append_samples(a.trial, a.seed, a.attempt, int(row["step"]), samples)
        a.buffer.append(row)
        a.rows.append(row)
        a.step = int(row["step"])
        t = self.trials[a.trial]
        value = row.get(self.recipe.objective.metric)
        if t.finished or value is None or not math.isfinite(float(value)):
            return
        step = int(row["step"])
        t.evals.setdefault(step, {})[a.seed] = float(value)
        # Report a step once every seed has reached it: the mean over seeds is what is judged.
        if len(t.evals[step]) == len(t.seeds) and step not in t.reported:
            t.reported.add(step)
            mean = sum(t.evals[step].values()) / len(t.seeds)
            if self.search.report(t.number, step, mean):
                self._finish_trial(t, "PRUNED", error=f"pruned at step {step} ({mean:.4g})")

    def _flush(self, a: Attempt) -> None:
        if a.buffer:
            self.store.append_trace(a.trial, a.seed, a.attempt, a.buffer)
            a.buffer = []
        a.last_flush = time.monotonic()

    # ------------------------------------------------------------------ outcomes

    def _end_attempt(self, a: Attempt, result: dict[str, Any]) -> None:
        del self.attempts[a.run_id]
        self.idle.append((a.worker, a.worker_info))
        t = self.trials[a.trial]
        state = result["state"]
        if state == "STOPPED" or (state == "COMPLETE" and a.stop_reason):
            state = a.stop_reason or "FAIL"
        self._record_run(a, state, result.get("error"))
        if state == "COMPLETE":
            t.seed_state[a.seed] = "COMPLETE"
            t.rows[a.seed] = a.rows
            if all(s == "COMPLETE" for s in t.seed_state.values()):
                self._complete_trial(t)
        elif state == "FAIL" and not t.finished:
            err = f"seed {a.seed}: {result.get('error')}"
            log.warning("trial %d failed: %s", t.number, err)
            self._finish_trial(t, "FAIL", error=err)

    def _on_worker_died(self, a: Attempt, exc: Exception) -> None:
        import ray

        del self.attempts[a.run_id]
        self.n_workers -= 1
        with contextlib.suppress(Exception):
            ray.kill(a.worker, no_restart=True)
        self._flush(a)
        msg = f"worker died: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self._record_run(a, "FAIL", msg)
        self._drop_idle_on_dead_nodes()
        t = self.trials[a.trial]
        if t.finished:
            return
        if a.attempt <= self.recipe.run.max_retries:
            log.warning("trial %d seed %d: %s; retrying", a.trial, a.seed, msg)
            t.seed_state[a.seed] = "WAITING"
            self.pending.appendleft((a.trial, a.seed, a.attempt + 1))
        else:
            self._finish_trial(t, "FAIL", error=f"seed {a.seed}: {msg} ({a.attempt} attempts)")

    def _drop_idle_on_dead_nodes(self) -> None:
        """Forget idle workers whose node is gone (node loss): a retry handed to one would
        only fail again and spend another attempt."""
        import ray

        if not self.idle:
            return
        try:
            dead = {n["NodeID"] for n in ray.nodes() if not n.get("Alive", True)}
        except Exception:  # the GCS is unreachable: nothing better to do than keep them
            return
        keep = []
        for handle, info in self.idle:
            if info.get("node") in dead:
                self.n_workers -= 1
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
            else:
                keep.append((handle, info))
        self.idle = keep

    def _record_run(self, a: Attempt, state: str, error: str | None) -> None:
        a.run_row.update(state=state, ended_at=now_iso(), error=error)
        self._write_runs()  # before the trial's outcome: a finished attempt is never lost

    def _complete_trial(self, t: TrialState) -> None:
        frames = [pd.DataFrame(rows).assign(seed=seed) for seed, rows in t.rows.items()]
        traces = pd.concat(frames, ignore_index=True).assign(trial=t.number)
        value = trial_value(traces, self.recipe.objective)
        if math.isfinite(value):
            self._finish_trial(t, "COMPLETE", value=value)
        else:
            metric = self.recipe.objective.metric
            self._finish_trial(t, "FAIL", error=f"objective metric {metric!r} was never measured")

    def _finish_trial(
        self, t: TrialState, state: str, value: float = math.nan, error: str | None = None
    ) -> None:
        """Close a trial everywhere: stop its other jobs, drop its queued ones, tell Optuna."""
        t.state, t.value, t.error, t.ended_at = state, value, error, now_iso()
        for a in self.attempts.values():
            if a.trial == t.number and a.stop_reason is None:
                a.stop_reason = state if state != "COMPLETE" else "FAIL"
                a.worker.stop.remote(a.run_id)
        self.pending = deque(p for p in self.pending if p[0] != t.number)
        self._write_trials()
        self.search.tell(t.number, value if state == "COMPLETE" else None, state)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ stop / resume

    def _check_stop_request(self) -> None:
        if self.stopping or time.monotonic() - self._last_stop_check < STOP_CHECK_SECONDS:
            return
        self._last_stop_check = time.monotonic()
        control = self.store.read_json(CONTROL_FILE) or {}
        if control.get("stop"):
            log.warning("stop requested: ending running jobs")
            self.stopping = True
            for a in self.attempts.values():
                a.stop_reason = "FAIL"
                a.worker.stop.remote(a.run_id)
            for t in self.trials.values():
                if not t.finished:
                    t.state, t.ended_at = "FAIL", now_iso()
                    t.error = "interrupted: sweep stopped; `sweeper resume` reruns it"
            self.pending.clear()
            self._dirty = True

    def _restore(self) -> None:
        """Rebuild state from the sweep dir after a controller ended (stopped or killed)."""
        search = self.search
        old_trials = {int(r["trial"]): r for r in _records(self.store.read_trials())}
        self.runs = [_clean(r) for r in _records(self.store.read_runs())]
        for r in self.runs:
            if r["state"] == "RUNNING":
                r.update(state="FAIL", error="interrupted: controller ended", ended_at=now_iso())
        completed = self.store.read_traces(completed_only=True)
        for info in search.trials():
            number, optuna_state = info["number"], info["state"]
            if optuna_state == "WAITING":  # enqueued, never asked: ask() hands it out later
                continue
            old = old_trials.get(number, {})
            t = TrialState(
                number=number,
                params=info["params"],
                seeds=list(self.recipe.search.seeds),
                state=optuna_state,
                value=info["value"] if info["value"] is not None else math.nan,
                error=old.get("error"),
                started_at=old.get("started_at") or now_iso(),
                ended_at=old.get("ended_at"),
            )
            self.trials[number] = t
            if optuna_state == "RUNNING":
                done = completed[completed["trial"] == number] if len(completed) else completed
                seeds_done = set(done["seed"]) if len(done) else set()
                if seeds_done >= set(t.seeds):
                    value = trial_value(done, self.recipe.objective)
                    t.state, t.value, t.ended_at = "COMPLETE", value, now_iso()
                    search.tell(number, value, "COMPLETE")
        for number in search.recover():  # unfinished trials: closed here, rerun as new ones
            t = self.trials[number]
            t.state, t.ended_at = "FAIL", now_iso()
            t.error = "interrupted: controller ended; rerun as a new trial"
        self._write_runs()
        self._write_trials()

    # ------------------------------------------------------------------ writing

    def _write_trials(self) -> None:
        self.store.write_trials([t.row() for t in self.trials.values()], self.param_keys)
        self._dirty = True

    def _write_runs(self) -> None:
        self.store.write_runs(self.runs)
        self._dirty = True

    def _publish(self, state: str = "running", force: bool = False) -> None:
        """Write status.json and call ``on_update``: on a change of state, and at most once a
        second for step progress alone."""
        due = time.monotonic() - self._last_publish >= PUBLISH_SECONDS
        if not (force or self._dirty or (self._progressed and due)):
            return
        self._dirty = self._progressed = False
        self._last_publish = time.monotonic()
        status = self.status(state)
        self.store.write_status(status)
        if self.on_update is not None:
            self.on_update(status)

    def _shutdown(self) -> None:
        import ray

        for a in list(self.attempts.values()):
            with contextlib.suppress(Exception):
                self._flush(a)
            a.run_row.update(
                state="FAIL", ended_at=now_iso(), error="interrupted: controller ended"
            )
        self.attempts.clear()
        with contextlib.suppress(Exception):
            self._write_runs()
            self._write_trials()
        for handle, _ in self.idle:
            with contextlib.suppress(Exception):
                ray.kill(handle)
        self.idle.clear()

    def _expected_trials(self) -> int | None:
        search = self.recipe.search
        if search.kind == "grid":
            return len(self.recipe.grid_points())
        return search.n_trials

    def _optuna_url(self) -> str:
        if self.recipe.run.optuna_storage:
            return self.recipe.run.optuna_storage
        path = self.store.optuna_sqlite_path()
        if path is None:
            raise InputError(
                f"{self.store.uri}: a remote sweep dir needs run.optuna_storage "
                "(an SQLAlchemy URL, e.g. postgresql://...)"
            )
        return f"sqlite:///{path}"


def _default_resources() -> Any:
    from sweeper.recipe import ResourcesConfig

    return ResourcesConfig()


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records") if len(frame) else []


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet round-trips give NaN for missing strings; make them None again."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
