"""The trial book: the state machine of a sweep's trials and job attempts.

A trial is one config run over its seeds; each (trial, seed) job runs as one or more attempts (a
worker that dies gets its job retried as attempt + 1). The book knows the unfinished trials and
the running attempts of this controller's run, the queue of jobs waiting for a worker, and the
one path that finishes a trial (:meth:`TrialBook.finish`): record it, stop its other jobs, drop
its queued ones, write its trials.parquet row, tell Optuna. The live run and ``resume`` both
finish trials through it, so the sweep dir and the Optuna study always agree on a trial's state
and value.

Memory and work stay flat in the number of finished trials: a finished trial and an ended
attempt leave memory once recorded (their state lives in the sweep dir); every state change
records only the changed row (:meth:`~sweeper.store.SweepStore.append_trials`, a table log at a
constant cost per change); the counts per state and the best trial so far are kept as they change
(:class:`Tally`). Racing keeps a compact summary of each config whose race ended
(:mod:`.seeds`). ``restore`` (resume) rebuilds all of it from the sweep dir.

Crash safety, by ordering: an attempt's rows are flushed (by the caller) before runs.parquet says
COMPLETE, and a trial is told to Optuna only after its attempts are recorded (each record is
durable when ``append_*`` returns).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

from sweeper.config.recipe import Recipe
from sweeper.controller.seeds import SeedPlan
from sweeper.controller.writer import SweepWriter, now_iso
from sweeper.racing import RaceEnd
from sweeper.rank import scope_value, seed_values
from sweeper.search import Search
from sweeper.search.rebuild import RERUN_REASON
from sweeper.stats import aggregate

log = logging.getLogger("sweeper.controller")


class TrialState(str, Enum):
    """A trial's or an attempt's state, by Optuna's names (the values in the Parquet tables)."""

    WAITING = "WAITING"
    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"

    @property
    def finished(self) -> bool:
        return self in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Attempt:
    """One job attempt, (trial, seed, attempt): one row of runs.parquet."""

    trial: int
    seed: int
    attempt: int
    run_id: str
    worker: str = ""
    node: str = ""
    state: TrialState = TrialState.RUNNING
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    error: str | None = None
    step: int = -1
    stop_reason: TrialState | None = None
    """Set when the controller asked the job to stop; its outcome is then this state."""
    objective: list[tuple[int, float]] = field(default_factory=list)
    """(step, value) of the objective metric at each step where it was measured."""

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "seed": self.seed,
            "attempt": self.attempt,
            "state": self.state.value,
            "worker": self.worker,
            "node": self.node,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "error": self.error,
        }


@dataclass
class Trial:
    """One config over its seeds: one row of trials.parquet."""

    number: int
    params: dict[str, Any]
    seeds: list[int]
    state: TrialState = TrialState.RUNNING
    value: float = math.nan
    error: str | None = None
    started_at: str = field(default_factory=now_iso)
    ended_at: str | None = None
    seed_state: dict[int, TrialState] = field(default_factory=dict)
    seed_values: dict[int, float] = field(default_factory=dict)
    """Per completed seed, its objective value by ``objective.scope`` (NaN: never measured)."""
    racing: str | None = None
    """Why its race ended (``search.racing``: dropped, separated, max_seeds); None otherwise."""
    evals: dict[int, dict[int, float]] = field(default_factory=dict)
    """step -> seed -> objective value, until every seed reached the step (then reported)."""
    reported: set[int] = field(default_factory=set)

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "state": self.state.value,
            **self.params,
            "value": self.value,
            "seeds": list(self.seeds),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "error": self.error,
        }


Job = tuple[int, int, int]
"""A queued job: (trial, seed, attempt)."""


class Tally:
    """Trials by state and the best COMPLETE trial so far, kept as states change (no pass over
    the trials)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.counts = {s.value: 0 for s in TrialState}
        self.best: dict[str, Any] | None = None

    def add(self, state: TrialState) -> None:
        """A trial enters the book in ``state``."""
        self.counts[state.value] += 1

    def move(self, old: TrialState, new: TrialState) -> None:
        """A trial goes from ``old`` to ``new``."""
        self.counts[old.value] -= 1
        self.counts[new.value] += 1

    def offer(self, number: int, value: float, params: dict[str, Any]) -> None:
        """A COMPLETE trial: the best so far if its value beats the best (ties: the first)."""
        if not math.isfinite(value):
            return
        best = self.best
        better = best is None or (
            value > best["value"] if self.mode == "max" else value < best["value"]
        )
        if better:
            self.best = {"trial": number, "value": value, "params": params}


class TrialBook:
    """Trials, attempts and the job queue of one controller run.

    Args:
        recipe: the sweep's recipe (seeds, objective, retries).
        search: the sweep's Optuna study (told when a trial finishes; asked to prune).
        writer: writes trials.parquet and runs.parquet.
        stop_jobs: called with the running attempts to stop when their trial finishes early.
    """

    def __init__(
        self,
        recipe: Recipe,
        search: Search,
        writer: SweepWriter,
        stop_jobs: Callable[[list[Attempt]], None],
    ) -> None:
        self.recipe = recipe
        self.search = search
        self.writer = writer
        self.stop_jobs = stop_jobs
        self.trials: dict[int, Trial] = {}  # the unfinished ones (a finished one leaves)
        self.running: dict[str, Attempt] = {}  # run_id -> attempt in flight
        self.pending: deque[Job] = deque()
        self.plan = SeedPlan(recipe)
        self.tally = Tally(recipe.objective.mode)
        self.search_open = True  # the search may still hand out trials

    # ------------------------------------------------------------------ opening and starting

    def open(self, number: int, params: dict[str, Any]) -> None:
        """A trial asked from the search: queue one job per seed (racing: the race decides)."""
        seeds = self.plan.first_seeds()
        t = Trial(number, params, seeds, seed_state=dict.fromkeys(seeds, TrialState.WAITING))
        self.trials[number] = t
        self.tally.add(t.state)
        self.pending.extend((number, s, 1) for s in seeds)
        self._write_trials([t])  # RUNNING: it shows in trials.parquet at once
        if self.plan.racing:
            self._race()

    def start(self, job: Job, run_id: str, worker: str, node: str) -> Attempt:
        """Record a queued job as started on a worker (runs.parquet says RUNNING)."""
        trial, seed, attempt = job
        a = Attempt(trial, seed, attempt, run_id, worker=worker, node=node)
        self.running[run_id] = a
        self.trials[trial].seed_state[seed] = TrialState.RUNNING
        self._write_runs([a])
        return a

    # ------------------------------------------------------------------ progress

    def on_row(self, a: Attempt, row: dict[str, Any]) -> None:
        """A step row of a running attempt: track its step and objective; report a step to the
        pruner once every seed of the trial has reached it (the mean over seeds is judged)."""
        step = int(row["step"])
        a.step = step
        value = row.get(self.recipe.objective.metric)
        if value is None or not math.isfinite(float(value)):
            return
        a.objective.append((step, float(value)))
        t = self.trials.get(a.trial)
        if t is None or t.state.finished:  # (finished: its jobs are being stopped)
            return
        t.evals.setdefault(step, {})[a.seed] = float(value)
        if len(t.evals[step]) == len(t.seeds) and step not in t.reported:
            t.reported.add(step)
            mean = sum(t.evals.pop(step).values()) / len(t.seeds)
            if self.search.report(t.number, step, mean):
                self.finish(t, TrialState.PRUNED, error=f"pruned at step {step} ({mean:.4g})")

    # ------------------------------------------------------------------ outcomes

    def end(self, a: Attempt, state: str, error: str | None) -> None:
        """An attempt's job returned (``state`` COMPLETE, STOPPED or FAIL, as the worker says)."""
        del self.running[a.run_id]
        if state == "STOPPED" or (state == "COMPLETE" and a.stop_reason is not None):
            outcome = a.stop_reason or TrialState.FAIL  # we stopped it: its outcome is why
        else:
            outcome = TrialState.COMPLETE if state == "COMPLETE" else TrialState.FAIL
        self._record(a, outcome, error)
        t = self.trials.get(a.trial)
        if t is None:  # its trial finished (and left) while it was being stopped
            if self.plan.racing:
                self._race()
            return
        if outcome is TrialState.COMPLETE:
            t.seed_state[a.seed] = TrialState.COMPLETE
            series = np.array([v for _, v in a.objective], dtype="float64")
            obj = self.recipe.objective
            t.seed_values[a.seed] = scope_value(series, obj.scope, obj.mode)
            if not self.plan.racing and all(
                s is TrialState.COMPLETE for s in t.seed_state.values()
            ):
                self._complete(t)
        elif outcome is TrialState.FAIL and not t.state.finished:
            err = f"seed {a.seed}: {error}"
            log.warning("trial %d failed: %s", t.number, err)
            self.finish(t, TrialState.FAIL, error=err)
        if self.plan.racing:  # after any outcome: a finished seed or trial changes the race
            self._race()

    def died(self, a: Attempt, message: str) -> None:
        """An attempt's worker died: retry the job on another worker, up to ``max_retries``."""
        del self.running[a.run_id]
        self._record(a, TrialState.FAIL, message)
        t = self.trials.get(a.trial)
        if t is None or t.state.finished:
            return
        if a.attempt <= self.recipe.run.max_retries:
            log.warning("trial %d seed %d: %s; retrying", a.trial, a.seed, message)
            t.seed_state[a.seed] = TrialState.WAITING
            self.pending.appendleft((a.trial, a.seed, a.attempt + 1))
        else:
            err = f"seed {a.seed}: {message} ({a.attempt} attempts)"
            self.finish(t, TrialState.FAIL, error=err)
            if self.plan.racing:  # a config left the race
                self._race()

    def finish(
        self, t: Trial, state: TrialState, value: float = math.nan, error: str | None = None
    ) -> None:
        """Close a trial everywhere -- the one path: record it, stop its other running jobs,
        drop its queued ones, write its row, tell Optuna; then it leaves memory."""
        self.tally.move(t.state, state)
        t.state, t.value, t.error, t.ended_at = state, value, error, now_iso()
        if state is TrialState.COMPLETE:
            self.tally.offer(t.number, value, t.params)
        # (running attempts and queued jobs: bounded by the workers and the seeds, not the sweep)
        others = [a for a in self.running.values() if a.trial == t.number and a.stop_reason is None]
        for a in others:  # (a COMPLETE trial with jobs left: dropped by racing, cut short)
            a.stop_reason = state if state is not TrialState.COMPLETE else TrialState.PRUNED
        if others:
            self.stop_jobs(others)
        if TrialState.WAITING in t.seed_state.values():
            self.pending = deque(p for p in self.pending if p[0] != t.number)
        if t.racing is not None:
            self.plan.race_ended(t)
        self._write_trials([t])
        told = value if state is TrialState.COMPLETE else None
        self.search.tell(t.number, told, state.value, error=error)  # type: ignore[arg-type]
        self.trials.pop(t.number, None)

    def _complete(self, t: Trial, value: float | None = None) -> None:
        """Its seeds are done: COMPLETE with the seed aggregate (``objective.seed_agg``) of
        their values, or FAIL when the objective metric was never measured."""
        if value is None:
            value = aggregate(list(t.seed_values.values()), self.recipe.objective.seed_agg)
        if math.isfinite(value):
            self.finish(t, TrialState.COMPLETE, value=value)
        else:
            metric = self.recipe.objective.metric
            self.finish(t, TrialState.FAIL, error=f"objective metric {metric!r} was never measured")

    def wants_trial(self) -> bool:
        """Whether the controller should ask the search for a trial before starting a queued
        job: when nothing is queued. Racing a grid: until every point is open, so every config
        warms up before any race ends (the grid is the race's field). Racing with Optuna: when no
        queued job is a warm-up (new configs get their ``min_seeds`` before contenders get
        more; configs arrive one by one and race against those already run)."""
        if not self.plan.racing:
            return not self.pending
        if self.recipe.search.kind == "grid":
            return self.search_open
        return not any(self.plan.warming_up(self.trials[trial]) for trial, _, _ in self.pending)

    def close_search(self) -> None:
        """The search is exhausted: a raced leader left without rivals may now end."""
        self.search_open = False
        if self.plan.racing:
            self._race()

    def _race(self) -> None:
        """Racing: end the races the race ends, and queue the seeds it hands out -- retries
        first, then warm-ups, then the other contenders, each in the race's order."""
        launches, ends = self.plan.decide(self.trials.values(), self.search_open)
        for end in ends:
            self._end_race(self.trials[end.trial], end)
        changed = []
        for trial, seeds in launches:
            t = self.trials.get(trial)
            if t is None:  # (its race ended in this same decision)
                continue
            t.seeds.extend(seeds)
            t.seed_state.update(dict.fromkeys(seeds, TrialState.WAITING))
            self.pending.extend((trial, s, 1) for s in seeds)
            changed.append(t)
        self.pending = deque(
            sorted(
                self.pending, key=lambda j: (j[2] == 1, not self.plan.warming_up(self.trials[j[0]]))
            )
        )
        self._write_trials(changed)  # their seeds changed

    def _end_race(self, t: Trial, end: RaceEnd) -> None:
        """A race ended: the trial completes with the aggregate of the seeds it ran (a dropped
        config is not a failure), and says why in trials.parquet and the study."""
        t.racing = end.reason
        self.search.set_user_attr(t.number, "racing", end.reason)
        self._complete(t, end.value)

    def stop_all(self, reason: str) -> list[Attempt]:
        """``sweeper stop``: every running attempt is to stop, every unfinished trial is marked
        FAIL with ``reason`` (Optuna keeps it RUNNING, so ``resume`` reruns it); returns the
        attempts to stop."""
        running = list(self.running.values())
        for a in running:
            a.stop_reason = TrialState.FAIL
        for t in self.trials.values():
            if not t.state.finished:
                self.tally.move(t.state, TrialState.FAIL)
                t.state, t.ended_at, t.error = TrialState.FAIL, now_iso(), reason
        self.pending.clear()
        return running

    def interrupt(self, reason: str) -> None:
        """The controller is ending: attempts still running are recorded FAIL with ``reason``,
        the unfinished trials' rows are written, and the table log is folded (trials.parquet
        and runs.parquet are complete)."""
        ended = list(self.running.values())
        for a in ended:
            a.state, a.ended_at, a.error = TrialState.FAIL, now_iso(), reason
        self.running.clear()
        self._write_runs(ended)
        self._write_trials(list(self.trials.values()))
        self.writer.fold_tables()

    # ------------------------------------------------------------------ resume

    def restore(self) -> None:
        """Rebuild the book from the sweep dir and the study after a controller ended (stopped,
        killed): finished trials are kept (on disk; only their counts, the best one and, when
        racing, their race summaries come back into memory); a trial whose every seed has a
        COMPLETE attempt is finished from its traces; other unfinished trials are closed, to be
        rerun as new ones. Only rows that change are written."""
        restore_book(self)

    # ------------------------------------------------------------------ views

    def counts(self) -> dict[str, int]:
        """Trials by state (every state present, zero or not), this run's and restored ones."""
        return dict(self.tally.counts)

    def best(self) -> dict[str, Any] | None:
        """The best COMPLETE trial so far (trial, value, params), or None."""
        return None if self.tally.best is None else dict(self.tally.best)

    # ------------------------------------------------------------------ writing

    def _record(self, a: Attempt, state: TrialState, error: str | None) -> None:
        a.state, a.ended_at, a.error = state, now_iso(), error
        self._write_runs([a])  # before the trial's outcome: a finished attempt is never lost

    def _write_trials(self, trials: list[Trial]) -> None:
        """Record the rows of trials that changed."""
        rows = [t.row() for t in trials]
        if self.plan.racing:  # the racing column: why a race ended, null while it runs
            for row, t in zip(rows, trials, strict=True):
                row["racing"] = t.racing
        self.writer.write_trials(rows)

    def _write_runs(self, attempts: list[Attempt]) -> None:
        """Record the rows of attempts that changed."""
        self.writer.write_runs([a.row() for a in attempts])


def restore_book(book: TrialBook) -> None:
    """:meth:`TrialBook.restore`: the book rebuilt from the sweep dir and the study."""
    store = book.writer.store
    interrupted = []
    for r in _records(store.read_runs()):
        if r["state"] == TrialState.RUNNING.value:  # its controller died under it
            a = Attempt(
                int(r["trial"]), int(r["seed"]), int(r["attempt"]), run_id="",
                worker=r.get("worker") or "", node=r.get("node") or "",
                state=TrialState.FAIL, started_at=r.get("started_at") or now_iso(),
                ended_at=now_iso(), error="interrupted: controller ended",
            )  # fmt: skip
            interrupted.append(a)
    book._write_runs(interrupted)
    old_trials = {int(r["trial"]): r for r in _records(store.read_trials())}
    per_seed = seed_values(store.read_traces(completed_only=True), book.recipe.objective)
    values: dict[int, dict[int, float]] = {}
    for trial, seed, value in per_seed[["trial", "seed", "value"]].itertuples(index=False):
        values.setdefault(int(trial), {})[int(seed)] = float(value)
    pool = set(book.recipe.search.seeds)
    for info in book.search.trials():
        if info["state"] == "WAITING":  # enqueued, never asked: ask() hands it out later
            continue
        t = _restored(info, old_trials.get(info["number"]), values.get(info["number"], {}))
        book.tally.add(t.state)
        if t.state is not TrialState.RUNNING:
            if t.state is TrialState.COMPLETE:
                book.tally.offer(t.number, t.value, t.params)
            if t.racing is not None:
                book.plan.race_ended(t)
            if _differs(old_trials.get(t.number), t):  # the study is the truth
                book._write_trials([t])
            continue
        book.trials[t.number] = t
        # Every seed done but the controller died before telling Optuna: finish it now.
        # (A raced trial mid-race is rerun: its race state is not worth a second rule.)
        if not book.plan.racing and set(t.seed_values) >= pool:
            t.seeds = sorted(pool)
            book._complete(t)
    closed = []
    for number in book.search.recover():  # unfinished: closed here, rerun as new trials
        t = book.trials.pop(number)
        book.tally.move(t.state, TrialState.FAIL)
        t.state, t.ended_at = TrialState.FAIL, now_iso()
        t.error = RERUN_REASON
        closed.append(t)
    book._write_trials(closed)


def _restored(info: dict[str, Any], old: dict[str, Any] | None, done: dict[int, float]) -> Trial:
    """A trial of the study as the book knew it: state, value and params from the study, the
    rest from its trials.parquet row, ``done``: the objective of each seed that completed."""
    old = old or {}
    seeds = old.get("seeds")
    return Trial(
        info["number"], info["params"],
        [int(x) for x in seeds] if seeds is not None else sorted(done),
        state=TrialState(info["state"]),
        value=info["value"] if info["value"] is not None else math.nan,
        error=old.get("error") or info["user_attrs"].get("error"),
        started_at=old.get("started_at") or now_iso(),
        ended_at=old.get("ended_at"), seed_values=done,
        racing=info["user_attrs"].get("racing"),
    )  # fmt: skip


def _differs(old: dict[str, Any] | None, t: Trial) -> bool:
    """Whether a finished trial's trials.parquet row (None: missing) disagrees with the study."""
    if old is None or old.get("state") != t.state.value:
        return True
    value = old.get("value")
    if value is None or math.isnan(value):
        return not math.isnan(t.value)
    return bool(value != t.value)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts; Parquet round-trips give NaN for missing values, made None again here."""
    if not len(frame):
        return []
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
