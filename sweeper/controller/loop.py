"""The controller: runs a sweep's jobs on warm Ray workers and keeps the sweep dir current.

Flow (DESIGN §4): the Optuna study (:class:`~sweeper.search.Search`) hands out trials by
ask/tell; the trial book (:mod:`.trials`) turns each into one job per seed and keeps their state;
the worker pool (:mod:`.pool`) runs jobs on warm actors and drains their rows; the writer
(:mod:`.writer`) puts rows, tables and status into the sweep dir. This loop ties them together:

    until the search is exhausted and no job runs (or a stop is requested):
        hand queued jobs to free workers (asking the study for a trial when the queue is empty)
        wait for drained rows: record them, flush trace parts, end attempts, retry dead workers
        publish status.json

A pruned trial's jobs stop within one step; a job that raises fails its trial (error recorded)
and the sweep goes on; a job whose worker dies is retried with a new ``attempt`` number.
``resume`` rebuilds the book from the sweep dir first (:meth:`TrialBook.restore`).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sweeper.config.cluster import ClusterConfig, resolve_resources
from sweeper.config.recipe import Recipe
from sweeper.controller.pool import DRAIN_TIMEOUT, Dispatched, Drained, JobPool, WorkerPool
from sweeper.controller.trials import Attempt, TrialBook
from sweeper.controller.writer import SweepWriter, TraceBuffer, now_iso
from sweeper.search import Search
from sweeper.store import SweepStore

STOP_CHECK_SECONDS = 2.0
"""How often the controller looks for a ``sweeper stop`` request."""

PUBLISH_SECONDS = 1.0
"""status.json refresh for step progress alone (state changes publish at once)."""

INTERRUPTED = "interrupted: controller ended"


@dataclass
class _Running:
    """A job in flight: its attempt (book), its dispatch (pool) and its unwritten rows."""

    attempt: Attempt
    job: Dispatched
    buffer: TraceBuffer


class Controller:
    """Runs one sweep to its end (or until stopped) against a connected Ray.

    ``on_update(status)`` is called after every change of state (the CLI renders it).
    ``fixed_size``: the Ray cannot grow (the embedded one), so a job it cannot hold is bad input.
    ``pool``: where jobs run (default: a :class:`WorkerPool` of warm Ray actors, made by
    :meth:`run`); ``clock``: the monotonic seconds the loop's periods are measured in (a
    simulated cluster passes its discrete-event clock with its pool).
    """

    def __init__(
        self,
        recipe: Recipe,
        store: SweepStore,
        cluster: ClusterConfig | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        cache_dir: str | None = None,
        fixed_size: bool = True,
        pool: JobPool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recipe = recipe
        self.store = store
        self.on_update = on_update
        self.writer = SweepWriter(store, recipe.param_keys(), clock)
        self.resources = resolve_resources(recipe, cluster)
        self.cache_dir = cache_dir
        self.fixed_size = fixed_size
        self._pool = pool
        self._clock = clock
        self.started_at = now_iso()
        self._running: dict[str, _Running] = {}
        self._exhausted = False
        self._stopping = False
        self._changed = True  # a state change since the last publish
        self._progressed = False  # rows arrived since the last publish
        self._last_publish = -math.inf
        self._last_stop_check = -math.inf

    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run until every trial is finished or a stop is requested; returns the final status."""
        # In memory, rebuilt from the sweep dir on resume; mirrored for optuna-dashboard.
        search = Search.for_sweep(self.recipe, self.store, resume=resume)
        self.search = search
        self.book = TrialBook(self.recipe, search, self.writer, stop_jobs=self._stop_jobs)
        self.pool: JobPool = (
            self._pool
            if self._pool is not None
            else WorkerPool(
                self.resources, self.recipe.search.max_concurrent, self.fixed_size, self.cache_dir
            )
        )
        if resume:
            self.writer.recover_traces()  # leftover parts compacted, covered files deleted
            self.book.restore()
        self.writer.clear_stop_request()
        state = "failed"
        try:
            while True:
                self._check_stop_request()
                if not self._stopping:
                    self._fill()
                done = self._exhausted and not self.book.pending
                if not self._running and (self._stopping or done):
                    break
                for drained in self.pool.wait(
                    [r.job for r in self._running.values()], DRAIN_TIMEOUT / 2
                ):
                    self._on_drained(drained)
                self._flush_due()
                self._publish()
            state = "stopped" if self._stopping else "finished"
        finally:
            try:
                self._shutdown()
            finally:
                with contextlib.suppress(Exception):  # the mirror catches up (bounded wait),
                    search.close()  # so a final status means the mirror holds every trial
                self._publish(state=state, force=True)
        return self.status(state)

    # ------------------------------------------------------------------ scheduling

    def _fill(self) -> None:
        """Start queued jobs while there are free workers; ask for a trial only when needed."""
        while True:
            worker = self.pool.acquire()
            if worker is None:
                return
            if self.book.wants_trial():
                self._ask()
            if not self.book.pending:
                self.pool.release(worker)
                return
            job = self.book.pending.popleft()
            trial, seed, attempt = job
            run_id = f"{trial}-{seed}-{attempt}-{uuid.uuid4().hex[:6]}"
            job_dict = self.recipe.job_for(self.book.trials[trial].params).model_dump(mode="json")
            dispatched = self.pool.dispatch(worker, run_id, job_dict, seed)
            a = self.book.start(job, run_id, worker.label, worker.info.get("node", ""))
            buffer = TraceBuffer(trial, seed, attempt, last_flush=self._clock())
            self._running[run_id] = _Running(a, dispatched, buffer)
            self._changed = True

    def _ask(self) -> bool:
        if self._exhausted:
            return False
        asked = self.search.ask()
        if asked is None:
            self._exhausted = True
            self.book.close_search()
            return False
        self.book.open(*asked)
        self._changed = True
        return True

    # ------------------------------------------------------------------ events

    def _on_drained(self, drained: Drained) -> None:
        r = self._running[drained.job.run_id]
        if drained.died is not None:
            self._on_worker_died(r, drained.died)
            return
        for row in drained.rows:
            self.writer.write_samples(r.buffer, row)  # eval completions go to samples/
            r.buffer.rows.append(row)
            self.book.on_row(r.attempt, row)
            self._progressed = True
        if drained.result is None:
            return
        self.writer.end_attempt(r.buffer)  # rows before the outcome: a finished one loses nothing
        del self._running[r.attempt.run_id]
        self.pool.release(r.job.worker)
        self.book.end(r.attempt, drained.result["state"], drained.result.get("error"))
        self._changed = True

    def _on_worker_died(self, r: _Running, exc: Exception) -> None:
        del self._running[r.attempt.run_id]
        self.pool.discard(r.job.worker)
        self.writer.end_attempt(r.buffer)
        first = str(exc).splitlines()[0] if str(exc) else ""
        self.book.died(r.attempt, f"worker died: {type(exc).__name__}: {first}")
        self._changed = True

    def _flush_due(self) -> None:
        for r in self._running.values():
            self.writer.flush(r.buffer, force=False)

    def _stop_jobs(self, attempts: list[Attempt]) -> None:
        for a in attempts:
            self.pool.stop(self._running[a.run_id].job)
        self._changed = True

    def _check_stop_request(self) -> None:
        if self._stopping or self._clock() - self._last_stop_check < STOP_CHECK_SECONDS:
            return
        self._last_stop_check = self._clock()
        if self.writer.stop_requested():
            self._stopping = True
            reason = "interrupted: sweep stopped; `sweeper resume` reruns it"
            self._stop_jobs(self.book.stop_all(reason))

    # ------------------------------------------------------------------ status

    def status(self, state: str = "running") -> dict[str, Any]:
        """The live status (also written to status.json)."""
        return {
            "schema_version": 1,
            "sweep": self.recipe.name,
            "state": state,
            "objective": self.recipe.objective.model_dump(),
            "counts": self.book.counts(),
            "total_trials": self.recipe.n_configs(),
            "jobs_running": [
                {
                    "trial": r.attempt.trial,
                    "seed": r.attempt.seed,
                    "attempt": r.attempt.attempt,
                    "step": r.attempt.step,
                    "steps": self.recipe.job.steps,
                    "worker": r.job.worker.info.get("host", ""),
                }
                for r in self._running.values()
            ],
            "jobs_pending": len(self.book.pending),
            "best": self.book.best(),
            "controller": {"host": socket.gethostname(), "pid": os.getpid()},
            "started_at": self.started_at,
            "updated_at": now_iso(),
        }

    def _publish(self, state: str = "running", force: bool = False) -> None:
        """Write status.json and call ``on_update``: on a change of state, and at most once a
        second for step progress alone."""
        due = self._clock() - self._last_publish >= PUBLISH_SECONDS
        if not (force or self._changed or (self._progressed and due)):
            return
        self._changed = self._progressed = False
        self._last_publish = self._clock()
        status = self.status(state)
        self.writer.write_status(status)
        if self.on_update is not None:
            self.on_update(status)

    def _shutdown(self) -> None:
        # Ending anyway (perhaps because the sweep dir failed): write what can be written.
        for r in self._running.values():
            with contextlib.suppress(Exception):
                self.writer.end_attempt(r.buffer)
        self._running.clear()
        with contextlib.suppress(Exception):
            self.book.interrupt(INTERRUPTED)
        self.pool.shutdown()
