"""The simulated cluster (``sweeper.controller.simulated``): the pool calls the controller makes,
on a discrete-event clock -- rows on time, outcomes, stops, deaths, capacity."""

from __future__ import annotations

import math

import pytest

from sweeper.controller.pool import Drained
from sweeper.controller.simulated import SimClock, SimulatedNodeLoss, SimulatedPool
from sweeper.synthetic import run_synthetic

JOB = {"kind": "synthetic", "steps": 6, "eval": {"every": 2, "ks": [1]}}


def pool(**kw) -> tuple[SimClock, SimulatedPool]:
    clock = SimClock()
    kw = {"nodes": 1, "gpus_per_node": 2, "start_seconds": 2.0, "step_seconds": (1.0, 1.0), **kw}
    return clock, SimulatedPool(clock, **kw)


def drain_all(p: SimulatedPool, job, timeout: float = 0.5) -> list[Drained]:
    out = []
    for _ in range(1000):
        got = p.wait([job], timeout)
        out.extend(got)
        if any(d.result is not None or d.died is not None for d in got):
            return out
    raise AssertionError("the job never ended")


def test_a_job_yields_the_synthetic_rows_on_the_simulated_clock() -> None:
    clock, p = pool()
    worker = p.acquire()
    assert worker is not None and worker.info == {"host": "sim-node00", "pid": 0, "node": "node-00"}
    job = p.dispatch(worker, "r1", JOB, seed=3)
    assert p.wait([job], 0.5) == [] and clock.now == 0.5  # nothing due yet: the timeout passes
    drained = drain_all(p, job)
    rows = [r for d in drained for r in d.rows]
    expected = list(run_synthetic(JOB, 3))
    assert [r["step"] for r in rows] == list(range(7))
    assert all(
        math.isclose(a[k], b[k]) or (math.isnan(a[k]) and math.isnan(b[k]))
        for a, b in zip(rows, expected, strict=True)
        for k in b
    )
    assert drained[-1].result == {"state": "COMPLETE", "error": None}
    # The first row at 2 s (start-up), one more per second: the 7th at 8 s, with the outcome.
    assert clock.now == pytest.approx(8.0)


def test_wait_returns_when_every_job_has_something_or_at_the_timeout() -> None:
    clock, p = pool(step_seconds=(0.1, 0.1))
    a, b = p.acquire(), p.acquire()
    assert a is not None and b is not None and p.acquire() is None  # 2 GPUs
    ja, jb = p.dispatch(a, "a", JOB, 0), p.dispatch(b, "b", JOB, 1)
    assert p.wait([ja, jb], 0.5) == [] and clock.now == pytest.approx(0.5)
    got = p.wait([ja, jb], 5.0)  # both first rows are due at 2.0: back then, not at 5.5
    assert clock.now == pytest.approx(2.0)
    assert sorted(d.job.run_id for d in got) == ["a", "b"] and all(len(d.rows) == 1 for d in got)


def test_stop_ends_the_job_after_its_next_row() -> None:
    _, p = pool()
    job = p.dispatch(p.acquire(), "r", JOB, 0)
    first = [r for d in p.wait([job], 3.0) for r in d.rows]
    assert [r["step"] for r in first] == [0]
    p.stop(job)
    drained = drain_all(p, job)
    assert [r["step"] for d in drained for r in d.rows] == [1]
    assert drained[-1].result == {"state": "STOPPED", "error": None}


def test_a_job_error_is_a_fail_result() -> None:
    _, p = pool()
    job = p.dispatch(p.acquire(), "r", {**JOB, "fail_at_step": 2}, 0)
    drained = drain_all(p, job)
    assert [r["step"] for d in drained for r in d.rows] == [0, 1]
    assert drained[-1].result["state"] == "FAIL"
    assert "synthetic failure at step 2" in drained[-1].result["error"]


def test_a_dying_worker_is_reported_and_its_gpu_gets_a_new_worker() -> None:
    _, p = pool(gpus_per_node=1, die_prob=1.0)
    worker = p.acquire()
    assert worker is not None and p.acquire() is None
    drained = drain_all(p, p.dispatch(worker, "r", JOB, 0))
    assert isinstance(drained[-1].died, SimulatedNodeLoss) and p.died == 1
    p.discard(worker)
    assert p.acquire() is not None  # the slot is free again


def test_released_workers_are_reused_and_max_concurrent_caps() -> None:
    _, p = pool(nodes=2, gpus_per_node=4, max_concurrent=3)
    got = [p.acquire() for _ in range(4)]
    assert got[3] is None and p.capacity == 3
    assert {w.info["host"] for w in got[:3]} == {"sim-node00"}
    p.release(got[0])
    assert p.acquire() is got[0]
