"""A simulated cluster: the controller's pool calls on a discrete-event clock, no Ray.

:class:`SimulatedPool` implements :class:`~sweeper.controller.pool.JobPool` for a cluster of
``nodes x gpus_per_node`` slots (one job per slot). A dispatched job produces the rows of the
``synthetic`` job (:func:`sweeper.synthetic.run_synthetic`, by default) at simulated times: a
start-up delay, then one row per step at a per-job step time drawn from ``step_seconds``. ``wait``
advances the :class:`SimClock` the way the Ray pool's ``wait`` spends wall time -- until every
running job has something to hand back, or ``timeout`` -- and returns what is due by then. So
``Controller(recipe, store, pool=SimulatedPool(clock, ...), clock=clock)`` runs the controller's
real scheduling, trial book, writer, store and Optuna code at cluster scale in one process, with
simulated hours passing in seconds.

``die_prob``: a job's worker dies (node loss) at a random moment of the job with this
probability; the loop then sees ``Drained(died=...)`` as from Ray and retries the job.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sweeper.controller.pool import Dispatched, Drained, Worker
from sweeper.synthetic import run_synthetic

JobFn = Callable[[dict[str, Any], int], Iterable[dict[str, Any]]]
"""A job's rows from its job dict and seed (like ``run_synthetic``)."""


class SimulatedNodeLoss(RuntimeError):
    """The error a simulated job's worker dies with."""


@dataclass
class SimClock:
    """Simulated monotonic seconds: call it for the time; only the simulation moves it."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance_to(self, t: float) -> None:
        """Move the time forward to ``t`` (never back)."""
        self.now = max(self.now, t)


@dataclass
class _SimJob:
    """A job running on a simulated worker: its row iterator and when its next row is due."""

    rows: Iterator[dict[str, Any]]
    step_seconds: float
    next_time: float
    die_at: float
    next_row: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    result_at: float = 0.0
    stop: bool = False

    def advance(self, at: float) -> None:
        """Fetch the next row, or the outcome (due ``at``) when the job has none left or
        raised."""
        try:
            self.next_row = next(self.rows)
        except StopIteration:
            self.next_row = None
            self.result, self.result_at = {"state": "COMPLETE", "error": None}, at
        except Exception as exc:  # a job error fails its trial, as on a real worker
            self.next_row = None
            self.result, self.result_at = (
                {"state": "FAIL", "error": f"{type(exc).__name__}: {exc}"},
                at,
            )

    def due(self) -> float:
        """When this job next has something to hand back (a row, its outcome, its death)."""
        if self.result is not None:
            return self.result_at
        return min(self.next_time, self.die_at)


@dataclass
class SimulatedPool:
    """A :class:`~sweeper.controller.pool.JobPool` on a :class:`SimClock` (module docstring).

    Args:
        clock: the simulation's clock (give the same one to the ``Controller``).
        nodes, gpus_per_node: the cluster; one job per GPU.
        max_concurrent: the recipe's cap on jobs at once (None: every GPU).
        start_seconds: from dispatch to a job's first row.
        step_seconds: each job's step time is drawn uniformly from this range.
        die_prob: the probability that a job's worker dies during it.
        seed: seeds the draws.
        job_fn: a job's rows (default :func:`~sweeper.synthetic.run_synthetic`).
    """

    clock: SimClock
    nodes: int = 32
    gpus_per_node: int = 8
    max_concurrent: int | None = None
    start_seconds: float = 2.0
    step_seconds: tuple[float, float] = (0.5, 1.5)
    die_prob: float = 0.0
    seed: int = 0
    job_fn: JobFn = run_synthetic
    cpu_seconds: float = 0.0
    """Process time spent inside the pool (making rows): not the controller's own work."""
    dispatched: int = 0
    died: int = 0
    _idle: list[Worker] = field(default_factory=list)
    _free_slots: list[tuple[int, int]] = field(default_factory=list)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        slots = [(n, g) for n in range(self.nodes) for g in range(self.gpus_per_node)]
        if self.max_concurrent is not None:
            slots = slots[: self.max_concurrent]
        self._free_slots = slots[::-1]  # node 0 first

    @property
    def capacity(self) -> int:
        """Jobs the simulated cluster runs at once."""
        n = self.nodes * self.gpus_per_node
        return n if self.max_concurrent is None else min(n, self.max_concurrent)

    # ------------------------------------------------------------------ workers

    def acquire(self) -> Worker | None:
        """An idle worker, or a new one on a free GPU; None when every GPU is busy."""
        if self._idle:
            return self._idle.pop()
        if not self._free_slots:
            return None
        node, gpu = self._free_slots.pop()
        # Known at once (a Ray worker's info arrives with its first job).
        info = {"host": f"sim-node{node:02d}", "pid": gpu, "node": f"node-{node:02d}"}
        return Worker(handle=(node, gpu), info=info)

    def release(self, worker: Worker) -> None:
        """A worker whose job ended is free for the next."""
        self._idle.append(worker)

    def discard(self, worker: Worker) -> None:
        """A dead worker's GPU gets a fresh worker next time (the node came back)."""
        self._free_slots.append(worker.handle)

    # ------------------------------------------------------------------ jobs

    def dispatch(self, worker: Worker, run_id: str, job: dict[str, Any], seed: int) -> Dispatched:
        """Start a job: its first row is due ``start_seconds`` from now."""
        t0 = time.process_time()
        step = self._rng.uniform(*self.step_seconds)
        first = self.clock.now + self.start_seconds
        die_at = float("inf")
        if self.die_prob and self._rng.random() < self.die_prob:
            steps = int(job.get("steps", 1)) + 1
            die_at = first + self._rng.uniform(0.0, steps * step)
        sim = _SimJob(iter(self.job_fn(job, seed)), step, first, die_at)
        sim.advance(first)
        self.dispatched += 1
        self.cpu_seconds += time.process_time() - t0
        return Dispatched(run_id, worker, run_ref=sim, drain_ref=None)

    def wait(self, jobs: list[Dispatched], timeout: float) -> list[Drained]:
        """Advance the clock until every job has something due, or by ``timeout``, then hand
        back each job's rows due by then, its outcome once it ended, or its death."""
        t0 = time.process_time()
        now = self.clock.now
        if not jobs:
            self.clock.advance_to(now + min(timeout, 0.05))  # the Ray pool's idle sleep
            return []
        latest = max(j.run_ref.due() for j in jobs)
        self.clock.advance_to(min(now + timeout, latest))
        out = [d for d in (self._take(j) for j in jobs) if d is not None]
        self.cpu_seconds += time.process_time() - t0
        return out

    def _take(self, job: Dispatched) -> Drained | None:
        sim: _SimJob = job.run_ref
        now = self.clock.now
        rows: list[dict[str, Any]] = []
        while sim.result is None and sim.next_time <= now and sim.next_time < sim.die_at:
            assert sim.next_row is not None
            rows.append(sim.next_row)
            at, sim.next_time = sim.next_time, sim.next_time + sim.step_seconds
            if sim.stop:  # the worker checks its stop flag after each row
                sim.result, sim.result_at = {"state": "STOPPED", "error": None}, at
                break
            sim.advance(at)
        if sim.result is None and sim.die_at <= now:
            self.died += 1
            return Drained(job, died=SimulatedNodeLoss(f"simulated node loss at t={now:.1f}s"))
        result = sim.result if sim.result is not None and sim.result_at <= now else None
        if not rows and result is None:
            return None
        return Drained(job, rows=rows, result=result)

    def stop(self, job: Dispatched) -> None:
        """Ask a job to end after its next row."""
        job.run_ref.stop = True

    def shutdown(self) -> None:
        """Forget the idle workers."""
        self._idle.clear()
