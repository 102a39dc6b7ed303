"""The sweep-dir writer of a running controller: tables, trace parts, status and stop requests.

Everything the controller writes goes through :class:`SweepWriter` (which goes through
:class:`~sweeper.store.SweepStore`, atomic writes). A running job's rows are buffered per
attempt and written as one trace part file at most every ``FLUSH_SECONDS`` (live views read
them); when the attempt ends, before its outcome is recorded, :meth:`SweepWriter.end_attempt`
writes all its rows as one attempt file and deletes its parts, and attempt files are merged into
segments (:class:`sweeper.traces.TraceCompactor`). The written parts' tables stay in memory
until then (columnar: ~40 KB for 200 steps), so ending an attempt reads nothing back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from sweeper.config.job import SAMPLES_KEY
from sweeper.store import SweepStore
from sweeper.traces import TraceCompactor, trace_table

FLUSH_SECONDS = 2.0
"""How often a running job's buffered rows become a trace part file."""

CONTROL_FILE = "control.json"
"""Stop requests (``sweeper stop``) for the controller of a sweep dir."""


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class TraceBuffer:
    """One running attempt's trace rows: those not yet written, and the parts written."""

    trial: int
    seed: int
    attempt: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    parts: list[str] = field(default_factory=list)
    """Names of the part files written for this attempt."""
    tables: list[pa.Table] = field(default_factory=list)
    """Their tables, in the order written (what the attempt file is built from)."""

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.trial, self.seed, self.attempt)


class SweepWriter:
    """Writes one sweep dir on behalf of its controller."""

    def __init__(
        self, store: SweepStore, param_keys: list[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.param_keys = param_keys
        self.clock = clock
        """Times the trace flushes (``FLUSH_SECONDS``): the controller's clock."""
        self.traces = TraceCompactor(store)

    def write_trials(self, rows: list[dict[str, Any]]) -> None:
        """Record the rows of trials that changed (trials.parquet's table log: a cost per
        change independent of the sweep's size; durable on return)."""
        self.store.append_trials(rows, self.param_keys)

    def write_runs(self, rows: list[dict[str, Any]]) -> None:
        """Record the rows of job attempts that changed (runs.parquet's table log)."""
        self.store.append_runs(rows)

    def fold_tables(self) -> None:
        """Fold the table log into trials.parquet and runs.parquet (the controller's end)."""
        self.store.fold_tables()

    def flush(self, buffer: TraceBuffer, force: bool = True) -> None:
        """Write the buffered rows as one trace part (when ``force`` or the buffer is due)."""
        if not force and self.clock() - buffer.last_flush <= FLUSH_SECONDS:
            return
        if buffer.rows:
            table = trace_table(buffer.trial, buffer.seed, buffer.attempt, buffer.rows)
            part = self.store.next_part(buffer.key)
            buffer.parts.append(self.traces.write_part(buffer.key, part, table))
            buffer.tables.append(table)
            buffer.rows = []
        buffer.last_flush = self.clock()

    def end_attempt(self, buffer: TraceBuffer) -> None:
        """The attempt ended (any outcome, or the controller is shutting down): write all its
        rows as one attempt file, delete its parts, merge attempt files that are due. Called
        before the outcome is recorded, so a COMPLETE attempt's rows are always on disk."""
        tables = list(buffer.tables)
        if buffer.rows:
            tables.append(trace_table(buffer.trial, buffer.seed, buffer.attempt, buffer.rows))
        self.traces.end_attempt(buffer.key, tables, buffer.parts)
        buffer.rows, buffer.tables, buffer.parts = [], [], []

    def recover_traces(self) -> dict[str, int]:
        """Resume: clean up the trace files a previous controller left (see
        :meth:`sweeper.traces.TraceCompactor.recover`)."""
        return self.traces.recover()

    def write_samples(self, buffer: TraceBuffer, row: dict[str, Any]) -> None:
        """Take a row's logged eval completions (``eval.log_samples``) out of it and write them
        to samples/: they never go into the traces."""
        samples = row.pop(SAMPLES_KEY, None)
        if samples:
            self.store.append_samples(
                buffer.trial, buffer.seed, buffer.attempt, int(row["step"]), samples
            )

    def write_status(self, status: dict[str, Any]) -> None:
        """Rewrite status.json."""
        self.store.write_status(status)

    def clear_stop_request(self) -> None:
        """A starting controller: no stop is requested."""
        write_control(self.store, stop=False)

    def stop_requested(self) -> bool:
        """Whether ``sweeper stop`` asked this sweep to end."""
        control = self.store.read_json(CONTROL_FILE) or {}
        return bool(control.get("stop"))


def write_control(store: SweepStore, stop: bool) -> None:
    """Write control.json: ``stop`` asks the sweep's controller to end cleanly."""
    store.write_json(CONTROL_FILE, {"stop": stop, "updated_at": now_iso()})
