"""A submitted sweep's controller job seen through the Jobs API (sweeper.jobstate): the
staleness rule, the driver-log excerpt, the messages, and `status`/`watch` on a sweep dir whose
job failed, is pending, or whose Jobs API is unreachable -- with a stand-in client (the real
cluster is in tests/integration/test_submit_failure.py)."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from sweeper import jobstate
from sweeper.cli import app
from sweeper.jobstate import (
    STALE_SECONDS,
    JobReport,
    check_job,
    error_lines,
    is_stale,
    report_lines,
)
from sweeper.store import SweepStore
from sweeper.submit import SUBMISSION_JSON

runner = CliRunner()
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
SUBMISSION = {
    "submission_id": "sw",
    "address": "http://127.0.0.1:8265",
    "submissions": [{"id": "sw", "at": "2026-01-02T03:00:00+00:00"}],
}

MODULE_NOT_FOUND_LOG = """\
2026-01-02 03:00:01,000\tINFO job_manager.py:530 -- Runtime env is setting up.
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "<frozen runpy>", line 88, in _run_code
  File "/tmp/ray/session/runtime_resources/py_modules_files/_ray_pkg/sweeper/cli.py", line 17, in <module>
    import typer
ModuleNotFoundError: No module named 'typer'
"""


def ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).isoformat()


# --------------------------------------------------------------------------- staleness rule


@pytest.mark.parametrize(
    ("status", "stale"),
    [
        ({}, True),  # no status.json at all
        ({"state": "submitted", "updated_at": ago(1)}, True),  # the controller never wrote
        ({"state": "running", "updated_at": ago(2)}, False),  # fresh: no Jobs API call
        ({"state": "running", "updated_at": ago(STALE_SECONDS - 1)}, False),
        ({"state": "running", "updated_at": ago(STALE_SECONDS + 1)}, True),
        ({"state": "running"}, True),  # no updated_at: cannot be trusted
        ({"state": "running", "updated_at": "yesterday"}, True),
        ({"state": "finished", "updated_at": "2026-01-02T03:01:00+00:00"}, False),  # after it
        ({"state": "stopped", "updated_at": "2026-01-02T02:59:00+00:00"}, True),  # resubmitted
        ({"state": "stopped", "updated_at": "2026-01-02T03:00:30+00:00"}, False),
    ],
)
def test_staleness_rule(status: dict[str, Any], stale: bool) -> None:
    assert is_stale(status, SUBMISSION, now=NOW) is stale


def test_a_sweep_not_submitted_is_never_stale() -> None:
    assert is_stale({"state": "running", "updated_at": ago(86400)}, None, now=NOW) is False
    assert is_stale({}, None, now=NOW) is False


def test_naive_timestamps_are_utc() -> None:
    naive = (NOW - dt.timedelta(seconds=5)).replace(tzinfo=None).isoformat()
    assert is_stale({"state": "running", "updated_at": naive}, SUBMISSION, now=NOW) is False


# --------------------------------------------------------------------------- log excerpt


def test_error_lines_put_the_exception_first() -> None:
    lines = error_lines(MODULE_NOT_FOUND_LOG)
    assert lines[0] == "ModuleNotFoundError: No module named 'typer'"
    rows = MODULE_NOT_FOUND_LOG.splitlines()
    assert lines[1:] == rows[:-1]  # the rest in order, the exception line not twice
    assert error_lines(MODULE_NOT_FOUND_LOG, lines=3) == [rows[-1], rows[-3], rows[-2]]


def test_error_lines_keep_the_last_ten_and_strip_colour() -> None:
    log = "\n".join(f"\x1b[36mline {i}\x1b[0m" for i in range(40)) + "\nRuntimeError: boom\n"
    lines = error_lines(log)
    assert len(lines) == 10
    assert lines[0] == "RuntimeError: boom"
    assert lines[1:] == [f"line {i}" for i in range(31, 40)]


def test_error_lines_without_an_exception_are_the_tail() -> None:
    assert error_lines("a\n\n  \nb\nc\n", lines=2) == ["b", "c"]
    assert error_lines("") == []
    # The exception closing the *last* traceback, not a chained one's.
    chained = (
        "Traceback (most recent call last):\n  x\nKeyError: 'a'\n\nDuring handling...\n\n"
        "Traceback (most recent call last):\n  y\nValueError: b\n"
    )
    assert error_lines(chained)[0] == "ValueError: b"


# --------------------------------------------------------------------------- messages


def test_failed_report_lines() -> None:
    report = JobReport(
        "sw",
        "http://h:8265",
        "FAILED",
        message="Job entrypoint command failed with exit code 1",
        exit_code=1,
        error_lines=tuple(error_lines(MODULE_NOT_FOUND_LOG)),
    )
    assert report.failed
    lines = report_lines(report)
    assert lines[0] == "FAILED: controller job sw is FAILED on http://h:8265, exit code 1"
    assert lines[1] == "  ModuleNotFoundError: No module named 'typer'"
    assert lines[2] == "  last lines of the job's log:"
    assert lines[4] == "    Traceback (most recent call last):"
    assert len(lines) == 3 + 6  # headline, exception, label, the other 6 log lines


def test_other_report_lines() -> None:
    pending = JobReport("sw", "http://h:8265", "PENDING", "Job has not started yet.", since=100.0)
    assert not pending.failed
    assert report_lines(pending, now=130.0) == [
        "controller job sw is PENDING since 1970-01-01T00:01:40+00:00 (30 s ago): "
        "Job has not started yet."
    ]
    unknown = JobReport("sw", "http://h:8265", "UNKNOWN", "the cluster has no job sw")
    assert unknown.failed and report_lines(unknown)[0].startswith("FAILED: http://h:8265 has no")
    stopped = JobReport("sw", "http://h:8265", "STOPPED", "Job was intentionally stopped.")
    assert stopped.failed
    assert report_lines(stopped) == [
        "FAILED: controller job sw is STOPPED on http://h:8265",
        "  Job was intentionally stopped.",
    ]
    down = JobReport("sw", "http://h:8265", "UNREACHABLE", "cannot reach the Jobs API: refused")
    assert not down.failed
    assert report_lines(down) == [
        "cannot ask http://h:8265 about controller job sw: cannot reach the Jobs API: refused"
    ]


# --------------------------------------------------------------------------- with a sweep dir


class FakeJobs:
    """A stand-in for Ray's JobSubmissionClient: one job, whose info and logs are given."""

    def __init__(self, status: str, logs: str = "", message: str = "", start_ms: int = 0):
        self.info = SimpleNamespace(
            status=status,
            message=message,
            start_time=start_ms,
            end_time=None,
            driver_exit_code=1 if status == "FAILED" else None,
        )
        self.logs = logs
        self.calls: list[str] = []

    def get_job_info(self, job_id: str) -> Any:
        self.calls.append(f"info {job_id}")
        if job_id != "sw":
            raise RuntimeError(f"Request failed with status code 404: Job {job_id} does not exist.")
        return self.info

    def get_job_logs(self, job_id: str) -> str:
        self.calls.append(f"logs {job_id}")
        return self.logs


@pytest.fixture
def sweep(tmp_path: Path) -> SweepStore:
    store = SweepStore.create(str(tmp_path), "sw", "name: sw\n", {"name": "sw"}, {})
    store.write_status({"sweep": "sw", "state": "submitted", "counts": {}})
    store.write_json(SUBMISSION_JSON, SUBMISSION)
    return store


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Route sweeper.jobstate's Jobs API calls to the FakeJobs in ``jobs["client"]``."""
    holder: dict[str, Any] = {"client": None, "made": 0}

    def fake_client(address: str, cluster: Any = None, token_env: str | None = None) -> Any:
        holder["made"] += 1
        if holder["client"] is None:
            raise AssertionError("no Jobs API call expected")
        return holder["client"]

    monkeypatch.setattr(jobstate, "job_client", fake_client)
    monkeypatch.setattr(jobstate, "_reachable", lambda url, timeout=0: None)
    return holder


def test_status_of_a_failed_job_prints_failed_and_exits_1(
    sweep: SweepStore, jobs: dict[str, Any]
) -> None:
    jobs["client"] = FakeJobs("FAILED", logs=MODULE_NOT_FOUND_LOG)
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 1, result.output
    assert "[FAILED]" in result.output and "[submitted]" not in result.output
    assert "FAILED: controller job sw is FAILED" in result.output
    assert "ModuleNotFoundError: No module named 'typer'" in result.output
    assert jobs["client"].calls == ["info sw", "logs sw"]


def test_watch_of_a_failed_job_exits_1(sweep: SweepStore, jobs: dict[str, Any]) -> None:
    jobs["client"] = FakeJobs("FAILED", logs=MODULE_NOT_FOUND_LOG)
    result = runner.invoke(app, ["watch", sweep.uri, "--interval", "0.05"])
    assert result.exit_code == 1, result.output
    assert "ModuleNotFoundError" in result.output


def test_status_of_a_pending_job_says_since_when(sweep: SweepStore, jobs: dict[str, Any]) -> None:
    start = int((dt.datetime.now(dt.timezone.utc).timestamp() - 42) * 1000)
    jobs["client"] = FakeJobs("PENDING", message="Job has not started yet.", start_ms=start)
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 0, result.output
    assert "controller job sw is PENDING since" in result.output
    assert "s ago): Job has not started yet." in result.output
    assert jobs["client"].calls == ["info sw"]  # no logs for a job that did not fail


def test_a_job_the_cluster_does_not_know_is_failed(sweep: SweepStore, jobs: dict[str, Any]) -> None:
    sweep.write_json(SUBMISSION_JSON, {**SUBMISSION, "submission_id": "gone"})
    jobs["client"] = FakeJobs("RUNNING")
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 1, result.output
    assert "has no controller job gone" in result.output


def test_a_job_that_succeeded_without_a_status_is_failed(
    sweep: SweepStore, jobs: dict[str, Any]
) -> None:
    jobs["client"] = FakeJobs("SUCCEEDED", message="Job finished successfully.")
    report = check_job(sweep, sweep.read_status())
    assert report is not None and report.silent and report.failed


def test_a_fresh_running_sweep_makes_no_jobs_api_call(
    sweep: SweepStore, jobs: dict[str, Any]
) -> None:
    sweep.write_status({"sweep": "sw", "state": "running", "counts": {"RUNNING": 1}})
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 0, result.output
    assert "[running]" in result.output and "controller job" not in result.output
    assert jobs["made"] == 0


def test_a_stale_running_sweep_whose_job_runs_is_not_failed(
    sweep: SweepStore, jobs: dict[str, Any]
) -> None:
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=STALE_SECONDS + 5)).isoformat()
    sweep.write_status({"sweep": "sw", "state": "running", "counts": {}, "updated_at": old})
    jobs["client"] = FakeJobs("RUNNING", message="Job is currently running.")
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 0, result.output
    assert "[running]" in result.output and "controller job sw is RUNNING" in result.output


def test_an_unreachable_jobs_api_is_one_line_and_not_failed(sweep: SweepStore) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sweep.write_json(SUBMISSION_JSON, {**SUBMISSION, "address": f"http://127.0.0.1:{port}"})
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "cannot ask" in line]
    assert len(lines) == 1 and f"http://127.0.0.1:{port}" in lines[0]
    assert "FAILED" not in result.output


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf"])
def test_a_bad_wait_timeout_is_one_line_and_exit_2(tmp_path: Path, value: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\n")
    result = runner.invoke(app, ["submit", str(recipe), "--wait", "--timeout", value])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--timeout" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # nothing written


def test_a_controller_that_died_mid_sweep_is_failed(
    sweep: SweepStore, jobs: dict[str, Any]
) -> None:
    """status.json says running, written long ago; the job (its driver SIGKILLed) FAILED."""
    old = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=STALE_SECONDS * 10)).isoformat()
    counts = {"COMPLETE": 2, "RUNNING": 1}
    sweep.write_status({"sweep": "sw", "state": "running", "counts": counts, "updated_at": old})
    jobs["client"] = FakeJobs("FAILED", logs="Killed\n", message="Job entrypoint failed")
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 1, result.output
    assert "[FAILED]" in result.output and "2 complete" in result.output
    assert "  Killed" in result.output


def test_a_resubmitted_sweep_asks_about_the_new_job(
    sweep: SweepStore, jobs: dict[str, Any]
) -> None:
    """`resume --address` after a stop: status.json still says stopped, from before the new
    submission, so the new job is asked about (pending: a note, exit 0)."""
    sweep.write_status(
        {"sweep": "sw", "state": "stopped", "counts": {}, "updated_at": "2026-01-01T00:00:00+00:00"}
    )
    jobs["client"] = FakeJobs("PENDING", message="Job has not started yet.")
    result = runner.invoke(app, ["status", sweep.uri])
    assert result.exit_code == 0, result.output
    assert "[stopped]" in result.output and "controller job sw is PENDING" in result.output
