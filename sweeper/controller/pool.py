"""The worker pool: warm ``JobWorker`` actors, the cluster's capacity, dispatch and draining.

Workers hold the per-job resources (``num_cpus``, fractional ``num_gpus``, custom) for their
whole life and run job after job, so many short jobs do not pay start-up each time. A job starts
with one ``run`` call (which blocks in one of the actor's threads); its rows come back through
``drain`` long-polls in another thread; ``stop`` ends it between two steps. The pool never grows
past what the cluster can hold at once, re-read every ``CAPACITY_SECONDS`` (nodes come and go).

The controller's loop depends only on :class:`JobPool` (what it calls on a pool):
:class:`WorkerPool` is the real one; :class:`sweeper.controller.simulated.SimulatedPool` runs
the same calls on a discrete-event clock (benchmarks and tests at cluster scale, no Ray).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sweeper.config.recipe import ResourcesConfig
from sweeper.errors import InputError
from sweeper.worker import WORKER_CONCURRENCY, JobWorker

log = logging.getLogger("sweeper.controller")

DRAIN_TIMEOUT = 1.0
"""Long-poll length of one drain call (seconds)."""

CAPACITY_SECONDS = 5.0
"""How long a reading of the cluster's resources is trusted."""


@dataclass
class Worker:
    """A warm worker actor and where it lives (host, pid, node id; known after its first job)."""

    handle: Any
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.info.get('host', '')}:{self.info.get('pid', '')}"


@dataclass
class Dispatched:
    """A job running on a worker: its run id and the drain call in flight."""

    run_id: str
    worker: Worker
    run_ref: Any
    drain_ref: Any


@dataclass
class Drained:
    """What one drain call brought back: rows, and the job's result once it ended -- or the
    error that says its worker died."""

    job: Dispatched
    rows: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    died: Exception | None = None


class JobPool(Protocol):
    """What the controller's loop needs of a pool of workers (see :class:`WorkerPool`)."""

    def acquire(self) -> Worker | None:
        """An idle or new worker; None when every slot is busy."""
        ...

    def release(self, worker: Worker) -> None:
        """A worker whose job ended is free for the next."""
        ...

    def discard(self, worker: Worker) -> None:
        """Forget a worker that died."""
        ...

    def dispatch(self, worker: Worker, run_id: str, job: dict[str, Any], seed: int) -> Dispatched:
        """Start a job (a JSON-able job dict) on ``worker``."""
        ...

    def wait(self, jobs: list[Dispatched], timeout: float) -> list[Drained]:
        """What the running ``jobs`` handed back within ``timeout`` seconds (rows, results,
        deaths)."""
        ...

    def stop(self, job: Dispatched) -> None:
        """Ask a job to end after its current step."""
        ...

    def shutdown(self) -> None:
        """Release the workers (the sweep is over)."""
        ...


class WorkerPool:
    """Warm workers for one sweep, at most ``max_concurrent`` and what the cluster can hold.

    Args:
        resources: what each worker (one job at a time) holds.
        max_concurrent: the recipe's cap on jobs at once.
        fixed_size: True for the embedded Ray, which never grows: a job it cannot hold at all
            is bad input. A cluster may autoscale: one pending worker asks it for a node.
        cache_dir: the workers' tiny-policy cache root.
    """

    def __init__(
        self,
        resources: ResourcesConfig,
        max_concurrent: int,
        fixed_size: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        import ray

        self.resources = resources
        self.max_concurrent = max_concurrent
        self.fixed_size = fixed_size
        self.cache_dir = cache_dir
        self._actor_cls = ray.remote(max_concurrency=WORKER_CONCURRENCY)(JobWorker)  # type: ignore[call-overload]
        self._idle: list[Worker] = []
        self._count = 0
        self._capacity_cache: tuple[float, int] = (-math.inf, 0)

    # ------------------------------------------------------------------ workers

    def acquire(self) -> Worker | None:
        """An idle worker, or a new one while under capacity; None when all slots are busy."""
        if self._idle:
            return self._idle.pop()
        if self._count >= self.capacity():
            return None
        r = self.resources
        handle = self._actor_cls.options(
            num_cpus=r.num_cpus, num_gpus=r.num_gpus, resources=r.custom or None
        ).remote(cache_dir=self.cache_dir)
        self._count += 1
        return Worker(handle)

    def release(self, worker: Worker) -> None:
        """A worker whose job ended is free for the next."""
        self._idle.append(worker)

    def discard(self, worker: Worker) -> None:
        """Forget a dead worker (and make sure it is gone); idle workers on dead nodes too."""
        import ray

        self._count -= 1
        with contextlib.suppress(Exception):
            ray.kill(worker.handle, no_restart=True)
        self._drop_idle_on_dead_nodes()

    def capacity(self) -> int:
        """Concurrent jobs: ``max_concurrent``, capped by what the cluster can hold at once."""
        import ray

        checked_at, cached = self._capacity_cache
        if time.monotonic() - checked_at < CAPACITY_SECONDS:
            return cached
        total = ray.cluster_resources()
        r = self.resources
        cap = self.max_concurrent
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

    def _drop_idle_on_dead_nodes(self) -> None:
        """Forget idle workers whose node is gone (node loss): a retry handed to one would only
        fail again and spend another attempt."""
        import ray

        if not self._idle:
            return
        try:
            dead = {n["NodeID"] for n in ray.nodes() if not n.get("Alive", True)}
        except Exception:  # the GCS is unreachable: nothing better to do than keep them
            return
        keep = []
        for w in self._idle:
            if w.info.get("node") in dead:
                self._count -= 1
                with contextlib.suppress(Exception):
                    ray.kill(w.handle, no_restart=True)
            else:
                keep.append(w)
        self._idle = keep

    # ------------------------------------------------------------------ jobs

    def dispatch(self, worker: Worker, run_id: str, job: dict[str, Any], seed: int) -> Dispatched:
        """Start a job (a JSON-able job dict, re-validated on the worker) on ``worker``."""
        run_ref = worker.handle.run.remote(run_id, job, seed)
        if not worker.info:
            worker.info.update(_worker_info(worker.handle))
        return Dispatched(
            run_id, worker, run_ref, worker.handle.drain.remote(run_id, DRAIN_TIMEOUT)
        )

    def wait(self, jobs: list[Dispatched], timeout: float) -> list[Drained]:
        """The drains that came back within ``timeout``; each job whose job is still running
        gets its next drain call in flight."""
        import ray

        if not jobs:
            time.sleep(min(timeout, 0.05))
            return []
        by_ref = {j.drain_ref: j for j in jobs}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)
        out = []
        for ref in ready:
            job = by_ref[ref]
            try:
                got = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                out.append(Drained(job, died=exc))
                continue
            if got["result"] is None:
                job.drain_ref = job.worker.handle.drain.remote(job.run_id, DRAIN_TIMEOUT)
            out.append(Drained(job, rows=got["rows"], result=got["result"]))
        return out

    def stop(self, job: Dispatched) -> None:
        """Ask a job to end after its current step."""
        job.worker.handle.stop.remote(job.run_id)

    def shutdown(self) -> None:
        """Kill the idle workers (busy ones end with the Ray session)."""
        import ray

        for w in self._idle:
            with contextlib.suppress(Exception):
                ray.kill(w.handle)
        self._idle.clear()


def _worker_info(handle: Any) -> dict[str, Any]:
    import ray

    try:
        return dict(ray.get(handle.info.remote(), timeout=120))
    except Exception:  # a worker that dies on start is handled when its job fails
        return {}
