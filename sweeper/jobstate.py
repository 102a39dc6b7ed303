"""A submitted sweep's controller job, as the Ray Jobs API sees it.

``sweeper submit`` writes status.json (``submitted``) and submission.json (job id, Jobs API URL);
from then on only the controller, running on the cluster, writes status.json. When that
controller never starts -- the job's ``python`` lacks sweeper's dependencies, its runtime env
cannot be set up, the head has no room for the driver -- or dies without a last word, the sweep
dir alone cannot tell: it would say ``submitted`` (or ``running``) forever. ``status``, ``watch``
and ``submit --wait`` therefore ask the Jobs API, but only when the sweep dir looks stale
(:func:`is_stale`); a running sweep whose status.json is fresh costs the cluster nothing.

Stale, for a sweep dir with submission.json:

- status.json is absent or still says ``submitted``: the controller has not written yet;
- it says ``running`` and its ``updated_at`` is more than :data:`STALE_SECONDS` old;
- it says the sweep ended (``stopped``, ``failed``, ...) but a later submission (``resume
  --address``) is newer than that: the new controller has not written yet.

The answer (:class:`JobReport`): FAILED or STOPPED (or a job the cluster does not know) is a
failure, shown with the driver's last log lines, the exception line first; PENDING says since
when; a Jobs API that cannot be reached (or refuses the token) is said in one line and never
taken for a failure.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sweeper.errors import InputError
from sweeper.submit import SUBMISSION_JSON, job_client

STALE_SECONDS = 60.0
"""A ``running`` status.json older than this makes ``status``/``watch`` ask the Jobs API. The
controller rewrites status.json on every change of state and at most once a second while jobs
step, so a live controller is usually seconds old; a minute also absorbs clock skew between the
head node (which stamps ``updated_at``) and this machine. A false alarm costs one Jobs API call
that answers RUNNING (nothing is claimed)."""

LOG_LINES = 10
"""Lines of the driver's log shown under FAILED (the exception line first)."""

CONNECT_SECONDS = 5.0
"""How long to wait for the Jobs API's TCP port before calling it unreachable (Ray's client
sets no timeout: a silent network would hang ``status``)."""

WAITING_STATES = ("submitted", "starting")
"""status.json states written before the controller's own first status."""

FAILED_STATES = ("FAILED", "STOPPED", "UNKNOWN")
"""Job states that end the sweep as FAILED (UNKNOWN: the cluster has no such job)."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


@dataclass(frozen=True)
class JobReport:
    """What the Jobs API says about a sweep's controller job.

    ``state``: Ray's job status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), UNKNOWN (the
    cluster has no job of that id) or UNREACHABLE (no answer, or the token was refused)."""

    submission_id: str
    address: str
    state: str
    message: str = ""
    """Ray's message about the job (or why it could not be asked)."""
    since: float | None = None
    """Unix time the job was submitted / started (Ray's ``start_time``)."""
    ended: float | None = None
    exit_code: int | None = None
    error_lines: tuple[str, ...] = field(default=())
    """The driver's last log lines, the exception line first (a failure only)."""
    silent: bool = False
    """The job ended SUCCEEDED without the controller ever writing status.json."""

    @property
    def failed(self) -> bool:
        """Whether the sweep's controller is gone for good without finishing: the sweep is
        FAILED (``status``/``watch``/``submit --wait`` exit 1)."""
        return self.state in FAILED_STATES or self.silent


def read_submission(store: Any) -> dict[str, Any] | None:
    """submission.json (latest job id, Jobs API URL, history), or None for a sweep that was
    not submitted to a cluster."""
    record = store.read_json(SUBMISSION_JSON)
    if not isinstance(record, dict) or not record.get("submission_id"):
        return None
    return record


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _last_submitted_at(submission: dict[str, Any]) -> dt.datetime | None:
    history = submission.get("submissions") or []
    return _parse_time(history[-1].get("at")) if history and isinstance(history[-1], dict) else None


def is_stale(
    status: dict[str, Any] | None,
    submission: dict[str, Any] | None,
    now: dt.datetime | None = None,
) -> bool:
    """Whether a sweep dir's status.json may no longer tell the truth about its controller job
    (the rule in the module docstring). Never for a sweep without submission.json."""
    if not submission:
        return False
    status = status or {}
    state = status.get("state")
    if state is None or state in WAITING_STATES:
        return True
    now = now or dt.datetime.now(dt.timezone.utc)
    updated = _parse_time(status.get("updated_at"))
    if state == "running":
        return updated is None or (now - updated).total_seconds() > STALE_SECONDS
    submitted = _last_submitted_at(submission)
    return submitted is not None and (updated is None or submitted > updated)


def error_lines(text: str, lines: int = LOG_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of a driver's log, with its exception line (the one
    closing the last traceback, else the last ``...Error: ...`` line) moved to the front."""
    rows = [_ANSI.sub("", r).rstrip() for r in text.splitlines()]
    rows = [r for r in rows if r.strip()]
    if not rows:
        return []
    exc_at = None
    tracebacks = [i for i, r in enumerate(rows) if r.startswith("Traceback (most recent call")]
    if tracebacks:
        exc_at = next(
            (i for i in range(tracebacks[-1] + 1, len(rows)) if not rows[i][:1].isspace()), None
        )
    if exc_at is None:
        exc_at = next((i for i in reversed(range(len(rows))) if _EXCEPTION.match(rows[i])), None)
    start = max(len(rows) - lines, 0)
    tail = list(range(start, len(rows)))
    if exc_at is None:
        return [rows[i] for i in tail]
    rest = [i for i in tail if i != exc_at][-(lines - 1) :] if lines > 1 else []
    return [rows[exc_at], *(rows[i] for i in rest)]


def _reachable(url: str, timeout: float = CONNECT_SECONDS) -> str | None:
    """None when the Jobs API's TCP port accepts a connection; else why not (one line)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def _seconds(ms: Any) -> float | None:
    return float(ms) / 1000.0 if isinstance(ms, int | float) and ms > 0 else None


def ask_jobs_api(submission: dict[str, Any], lines: int = LOG_LINES) -> JobReport:
    """Ask the Jobs API named in submission.json about the sweep's latest controller job
    (with the token from the variable it names, default ``RAY_AUTH_TOKEN``); the logs are read
    only for a job that failed."""
    job_id = str(submission["submission_id"])
    url = str(submission.get("address") or "")
    unreachable = _reachable(url) if url else "no address in submission.json"
    if unreachable:
        return JobReport(job_id, url, "UNREACHABLE", f"cannot reach the Jobs API: {unreachable}")
    try:
        client = job_client(url, token_env=submission.get("auth_token_env"))
    except InputError as exc:
        return JobReport(job_id, url, "UNREACHABLE", str(exc))
    try:
        info = client.get_job_info(job_id)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "status code 404" in text or "does not exist" in text:
            return JobReport(job_id, url, "UNKNOWN", f"the cluster has no job {job_id}")
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return JobReport(job_id, url, "UNREACHABLE", f"the Jobs API refused: {first}")
    state = str(getattr(info.status, "value", info.status)).rsplit(".", 1)[-1]
    message = str(info.message or "")
    found: list[str] = []
    if state in FAILED_STATES:
        try:
            found = error_lines(client.get_job_logs(job_id) or "", lines)
        except Exception:  # the logs may be gone with the node that held them
            found = []
        if not found:
            found = error_lines(message, lines)
    return JobReport(
        job_id,
        url,
        state,
        message=message,
        since=_seconds(info.start_time),
        ended=_seconds(info.end_time),
        exit_code=info.driver_exit_code,
        error_lines=tuple(found),
    )


def check_job(store: Any, status: dict[str, Any] | None) -> JobReport | None:
    """For a stale sweep dir (:func:`is_stale`), what the Jobs API says about its controller
    job; None (and no call) otherwise."""
    submission = read_submission(store)
    if not is_stale(status, submission):
        return None
    assert submission is not None
    report = ask_jobs_api(submission)
    never_wrote = (status or {}).get("state") in (None, *WAITING_STATES)
    if report.state == "SUCCEEDED" and never_wrote:
        # Read again: a tiny sweep may have started and finished since status was read.
        never_wrote = store.read_status().get("state") in (None, *WAITING_STATES)
    if report.state == "SUCCEEDED" and never_wrote:
        report = JobReport(
            report.submission_id,
            report.address,
            report.state,
            message="the controller job ended without writing status.json",
            since=report.since,
            ended=report.ended,
            exit_code=report.exit_code,
            silent=True,
        )
    return report


def _when(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return ""
    now = time.time() if now is None else now
    stamp = dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")
    return f"{stamp} ({max(now - ts, 0):.0f} s ago)"


def report_lines(report: JobReport, now: float | None = None) -> list[str]:
    """The report as plain lines: a headline, then (a failure) the driver's last log lines."""
    job = f"controller job {report.submission_id}"
    first_message = report.message.strip().splitlines()[0] if report.message.strip() else ""
    if report.failed:
        if report.state == "UNKNOWN":
            head = f"FAILED: {report.address} has no {job} (never started, or the cluster lost it)"
        elif report.silent:
            head = f"FAILED: {job} ended without the controller writing status.json"
        else:
            code = f", exit code {report.exit_code}" if report.exit_code is not None else ""
            head = f"FAILED: {job} is {report.state} on {report.address}{code}"
        lines = [head]
        if report.error_lines:
            lines.append(f"  {report.error_lines[0]}")
            if len(report.error_lines) > 1:
                lines.append("  last lines of the job's log:")
                lines.extend(f"    {line}" for line in report.error_lines[1:])
        elif first_message:
            lines.append(f"  {first_message}")
        return lines
    if report.state == "UNREACHABLE":
        return [f"cannot ask {report.address} about {job}: {report.message}".rstrip()]
    if report.state == "PENDING":
        since = _when(report.since, now)
        head = f"{job} is PENDING" + (f" since {since}" if since else "")
        return [head + (f": {first_message}" if first_message else "")]
    if report.state == "RUNNING":
        return [f"{job} is RUNNING; status.json has not caught up with it yet"]
    return [f"{job} is {report.state}" + (f": {first_message}" if first_message else "")]


@dataclass(frozen=True)
class WaitOutcome:
    """How :func:`wait_for_controller` ended: ``started`` (status.json written by the
    controller), ``failed`` (the job failed; ``report`` says how) or ``timeout``."""

    outcome: str
    status: dict[str, Any]
    report: JobReport | None
    waited: float


def wait_for_controller(
    store: Any,
    timeout: float,
    poll: float = 1.0,
    on_report: Callable[[JobReport | None, float], None] | None = None,
) -> WaitOutcome:
    """Wait until the sweep's controller has written its first status.json, its job failed, or
    ``timeout`` seconds passed. ``on_report(report, elapsed)`` is called after every poll (for a
    progress line)."""
    started = time.monotonic()
    report: JobReport | None = None
    while True:
        status = store.read_status()
        elapsed = time.monotonic() - started
        if status.get("state") not in (None, *WAITING_STATES):
            return WaitOutcome("started", status, report, elapsed)
        report = check_job(store, status)
        if report is not None and report.failed:
            return WaitOutcome("failed", status, report, elapsed)
        if on_report is not None:
            on_report(report, elapsed)
        if elapsed >= timeout:
            return WaitOutcome("timeout", status, report, elapsed)
        time.sleep(max(min(poll, timeout - elapsed), 0.05))
