"""The warm worker: a Ray actor that runs jobs one after another and streams their rows.

It holds the imports, tokenizer and base policy in memory across jobs (the RLVR side does that in
``sweeper.rl.job.JobRunner``), so many short jobs do not pay start-up each time. The controller
starts a job with ``run`` (which blocks in one of the actor's threads) and drains rows with
``drain`` (a long poll in another thread); ``stop`` ends the job between two steps.

Only this module imports ``sweeper.rl``, lazily, and only for ``rlvr`` jobs.
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
from collections.abc import Iterator
from typing import Any

from sweeper.synthetic import run_synthetic

# run + drain + stop may be in flight at once.
WORKER_CONCURRENCY = 3


class JobWorker:
    """Runs one job at a time; see the module docstring. Wrap with ``ray.remote`` to use."""

    def __init__(self, cache_dir: str | None = None) -> None:
        self._cache_dir = cache_dir
        self._runner: Any = None  # sweeper.rl.job.JobRunner, created on the first rlvr job
        self._cond = threading.Condition()
        self._run_id: str | None = None
        self._rows: list[dict[str, Any]] = []
        self._result: dict[str, Any] | None = None
        self._stop = threading.Event()

    def info(self) -> dict[str, Any]:
        """Where this worker lives (recorded per attempt in runs.parquet)."""
        node = ""
        try:
            import ray

            node = ray.get_runtime_context().get_node_id()
        except Exception:  # outside Ray (tests call the class directly)
            pass
        return {"host": socket.gethostname(), "pid": os.getpid(), "node": node}

    def _iter_job(self, job: dict[str, Any], seed: int) -> Iterator[dict[str, Any]]:
        if job.get("kind", "rlvr") == "synthetic":
            return run_synthetic(job, seed)
        if self._runner is None:
            from sweeper.rl.job import JobRunner  # torch only on workers, only for rlvr

            self._runner = JobRunner(cache_dir=self._cache_dir, gpu_fraction=_gpu_fraction())
        return self._runner.run(job, seed)

    def run(self, run_id: str, job: dict[str, Any], seed: int) -> dict[str, Any]:
        """Run a job to its end (or until ``stop``). Returns ``{"state", "error"}`` where state is
        COMPLETE, STOPPED or FAIL; an exception inside the job is a FAIL with its message."""
        with self._cond:
            self._run_id, self._rows, self._result = run_id, [], None
            self._stop.clear()
        result: dict[str, Any] = {"state": "COMPLETE", "error": None}
        rows = None
        try:
            rows = self._iter_job(job, seed)
            for row in rows:
                with self._cond:
                    self._rows.append(row)
                    self._cond.notify_all()
                if self._stop.is_set():
                    result = {"state": "STOPPED", "error": None}
                    break
        except Exception as exc:  # a job error fails its trial, not the worker
            tb = traceback.format_exc(limit=8)
            result = {"state": "FAIL", "error": f"{type(exc).__name__}: {exc}", "traceback": tb}
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
            with self._cond:
                self._result = result
                self._cond.notify_all()
        return result

    def drain(self, run_id: str, timeout: float = 1.0) -> dict[str, Any]:
        """Rows produced since the last drain, waiting up to ``timeout`` s for one; plus the
        job's result once it has ended (then every row has been handed out)."""
        with self._cond:
            if self._run_id == run_id and not self._rows and self._result is None:
                self._cond.wait(timeout)
            if self._run_id != run_id:
                return {"rows": [], "result": None}
            rows, self._rows = self._rows, []
            return {"rows": rows, "result": self._result}

    def stop(self, run_id: str) -> None:
        """Ask the job ``run_id`` to end after its current step."""
        with self._cond:
            if self._run_id == run_id:
                self._stop.set()


def _gpu_fraction() -> float | None:
    """This actor's share of its GPU (fractional ``num_gpus``), for the rollout engine's memory
    share; None outside Ray or without a GPU."""
    try:
        import ray

        share = ray.get_runtime_context().get_assigned_resources().get("GPU")
    except Exception:  # outside Ray (tests call the class directly)
        return None
    return float(share) if share else None
