"""Cluster mode: run a sweep's controller on a Ray cluster as a Ray Job.

``submit_sweep`` validates the recipe, checks that the cluster's Jobs API answers (with the auth
token), then creates the sweep dir from the submitting side (so a relative path resolves here,
and the dir exists the moment the command returns) and submits
``python -m sweeper.cli resume <sweep dir> --address auto`` with ``submission_id`` = the sweep
name, shipping this ``sweeper`` package through ``runtime_env["py_modules"]`` (the cluster runs
the client's code; its dependencies come from the cluster's image or the cluster file's
``runtime_env``). The controller reads the recipe from the sweep dir, so laptops can close:
``status``/``watch``/``stop``/``rank``/``export`` need only the sweep dir, which must therefore be
reachable from the head node *and* from where you run those commands (``s3://...`` or a shared
file system). ``submit_resume`` submits the controller of an existing sweep dir again (after its
controller ended: killed, stopped, failed). submission.json records each submission; when the
sweep dir looks stale, ``status``/``watch``/``submit --wait`` ask the Jobs API about the job
through it (:mod:`sweeper.jobstate`).

Ray token auth (``RAY_AUTH_MODE=token``, on by default in Ray 2.60): the client sends the token
held in the variable named by the cluster file's ``auth_token_env`` (default ``RAY_AUTH_TOKEN``)
as an ``Authorization: Bearer`` header; without one, Ray's own lookup applies
(``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``, only when ``RAY_AUTH_MODE=token`` here).
The token is never written anywhere and never forwarded to the job (the cluster has its own).
"""

from __future__ import annotations

import os
import re
import shlex
import time
from typing import Any

import sweeper
from sweeper.config.cluster import ClusterConfig, address_kind, read_auth_token
from sweeper.config.loader import load_cluster
from sweeper.controller import now_iso
from sweeper.errors import InputError

# Environment passed on to the controller job (storage credentials and endpoints). Ray's auth
# variables are deliberately absent: every cluster process already has the cluster's token.
FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "SWEEPER_S3_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "SWEEPER_CACHE",
)

SUBMISSION_JSON = "submission.json"
"""Written into the sweep dir: the Ray Job ids that ran its controller, and where."""

TERMINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "STOPPED")

SUBMIT_RETRY_SECONDS = 60.0
"""How long a submission is retried while the Jobs API says to try again later (a head whose
job agent is still starting)."""

_TRANSIENT = ("try again later", "status code 502", "status code 503", "status code 504")


def dashboard_url(address: str) -> str:
    """The Jobs API URL for an address: ``http(s)://host:port`` as given (no trailing slash),
    else ``http://host:8265`` for a ``ray://host:port`` or ``host:port`` address."""
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    host = re.sub(r"^ray://", "", address).rsplit(":", 1)[0]
    if not host:
        raise InputError(f"bad cluster address {address!r}: expected http://host:8265")
    return f"http://{host}:8265"


def auth_headers(
    cluster: ClusterConfig | None = None, token_env: str | None = None
) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` with the cluster's token
    (:func:`~sweeper.config.cluster.read_auth_token`; ``token_env`` names the variable instead
    of a cluster file), or ``{}`` (Ray's own token lookup then applies)."""
    if token_env is not None:
        token = os.environ.get(token_env, "").strip() or None
    else:
        token = read_auth_token(cluster)
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(
    address: str, cluster: ClusterConfig | None = None, token_env: str | None = None
) -> Any:
    """A ``JobSubmissionClient`` for the cluster's Jobs API (the token from ``cluster``'s
    ``auth_token_env``, or from the variable ``token_env``); ``InputError`` (one line) if it
    cannot be reached or refuses the token."""
    from ray.job_submission import JobSubmissionClient

    url = dashboard_url(address)
    try:
        return JobSubmissionClient(url, headers=auth_headers(cluster, token_env) or None)
    except Exception as exc:
        raise InputError(f"cannot reach the Ray cluster at {url}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _target(cluster: ClusterConfig | None, cluster_path: str | None, address: str | None) -> str:
    target = address or (cluster.address if cluster is not None else None)
    if not target:
        if cluster_path:
            raise InputError(f"{cluster_path}: submitting needs a kind: ray cluster with `address`")
        raise InputError("submit needs --cluster FILE or --address http://HEAD:8265")
    return target


def _connect(
    cluster: ClusterConfig | None, cluster_path: str | None, address: str | None
) -> tuple[Any, str]:
    """The Jobs API client and its URL, from --address or the cluster file."""
    target = _target(cluster, cluster_path, address)
    client = job_client(target, cluster)
    return client, dashboard_url(target)


def _runtime_env(cluster: ClusterConfig | None) -> dict[str, Any]:
    runtime_env: dict[str, Any] = dict(cluster.runtime_env) if cluster is not None else {}
    # Ship this very package: the controller and its workers run the client's sweeper code.
    runtime_env.setdefault("py_modules", [os.path.dirname(sweeper.__file__)])
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    runtime_env["env_vars"] = {**env, **dict(runtime_env.get("env_vars") or {})}
    return runtime_env


def _submit(
    client: Any,
    store: Any,
    submission_id: str,
    cluster: ClusterConfig | None,
) -> None:
    """Submit the controller of ``store`` as the Ray Job ``submission_id``; a Jobs API that is
    transiently unavailable ("try again later", 502/503/504) is retried with backoff for up to
    :data:`SUBMIT_RETRY_SECONDS`."""
    entrypoint = f"python -m sweeper.cli resume {shlex.quote(store.uri)} --address auto"
    deadline = time.monotonic() + SUBMIT_RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env=_runtime_env(cluster),
                metadata={"sweeper_sweep": store.uri},
            )
            return
        except Exception as exc:
            transient = any(t in str(exc).lower() for t in _TRANSIENT)
            if not transient or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 8.0)


def _job_exists(client: Any, submission_id: str) -> bool:
    try:
        client.get_job_status(submission_id)
    except Exception:  # not found (or the cluster is gone): nothing runs for this sweep dir
        return False
    return True


def _record_submission(
    store: Any, submission_id: str, url: str, cluster: ClusterConfig | None
) -> None:
    """submission.json: the latest job id, the Jobs API URL, the name (never the value) of the
    variable holding the cluster's token, and every submission with its time (what
    :mod:`sweeper.jobstate` reads to ask the cluster about a stale sweep)."""
    previous = store.read_json(SUBMISSION_JSON) or {}
    history = [*previous.get("submissions", []), {"id": submission_id, "at": now_iso()}]
    record: dict[str, Any] = {"submission_id": submission_id, "address": url}
    token_env = cluster.auth_token_env if cluster is not None else previous.get("auth_token_env")
    if token_env:
        record["auth_token_env"] = token_env
    store.write_json(SUBMISSION_JSON, {**record, "submissions": history})


def submit_sweep(
    recipe_path: str,
    overrides: list[str] | None,
    storage: str | None,
    cluster_path: str | None,
    address: str | None,
) -> dict[str, Any]:
    """Validate, create the sweep dir and submit its controller as a Ray Job; returns at once
    with ``submission_id``, ``address`` (Jobs API URL) and ``sweep_dir``.

    Bad input (recipe, cluster file, an unreachable cluster, a refused token) raises
    ``InputError`` before anything is written."""
    from sweeper.sweeps import (
        check_sweep_inputs,
        create_sweep_dir,
        remove_new_sweep,
        sweep_dirs_made,
    )

    # Bad input fails before anything is written (the preflight checks the address answers).
    recipe, text, cluster, root = check_sweep_inputs(
        recipe_path, overrides, storage, cluster_path, address, command="submit"
    )
    client, url = _connect(cluster, cluster_path, address)
    store = create_sweep_dir(recipe, text, root, recipe_path, overrides)
    created = sweep_dirs_made(store)
    submission_id = store.name
    # "submitted" goes first: once the job runs, only the controller writes status.json.
    store.write_status(
        {
            "sweep": recipe.name,
            "state": "submitted",
            "counts": {},
            "submission_id": submission_id,
            "address": url,
        }
    )
    try:
        _submit(client, store, submission_id, cluster)
    except Exception as exc:
        if not _job_exists(client, submission_id):  # nothing runs: leave nothing behind
            remove_new_sweep(store, created)
            raise InputError(
                f"submission of {submission_id} to {url} failed: {_first_line(exc)} "
                "(nothing was written)"
            ) from exc
        store.write_status(
            {"sweep": recipe.name, "state": "submit-failed", "counts": {}, "error": str(exc)}
        )
        raise InputError(
            f"submission of {submission_id} to {url} failed: {_first_line(exc)} "
            f"(sweep dir {store.uri} kept; `sweeper resume {store.uri} --address {url}` retries)"
        ) from exc
    _record_submission(store, submission_id, url, cluster)
    return {"submission_id": submission_id, "address": url, "sweep_dir": store.uri}


def is_job_submission(cluster_path: str | None, address: str | None) -> bool:
    """Whether ``resume`` with these options means "submit the controller as a Ray Job": the
    address (or the cluster file's) is a Jobs API URL (``http(s)://``)."""
    if address:
        return address.startswith(("http://", "https://"))
    if cluster_path:
        cluster = load_cluster(cluster_path)
        return cluster.address is not None and address_kind(cluster.address) == "jobs"
    return False


def submit_resume(sweep: str, cluster_path: str | None, address: str | None) -> dict[str, Any]:
    """Submit the controller of an existing sweep dir again, as a new Ray Job
    (``<name>-r2``, ``-r3``, ...): finished trials are kept, unfinished ones rerun. Refuses while
    the sweep's previous job is still pending or running."""
    from sweeper.sweeps import finished_note, open_sweep

    store = open_sweep(sweep)
    note = finished_note(store)
    if note:  # nothing to resume: nothing is submitted, nothing changes
        return {"note": note, "sweep_dir": store.uri}
    cluster = load_cluster(cluster_path) if cluster_path else None
    client, url = _connect(cluster, cluster_path, address)
    previous = store.read_json(SUBMISSION_JSON) or {}
    last = previous.get("submission_id")
    if last:
        try:
            state = str(client.get_job_status(last))
        except Exception:  # submitted to another cluster, or deleted: nothing to wait for
            state = "UNKNOWN"
        state = state.rsplit(".", 1)[-1]
        if state not in (*TERMINAL_JOB_STATES, "UNKNOWN"):
            raise InputError(
                f"{store.uri}: its controller job {last} is still {state}; `sweeper stop` it first"
            )
    submission_id = f"{store.name}-r{len(previous.get('submissions', [])) + 1}"
    try:
        _submit(client, store, submission_id, cluster)
    except Exception as exc:
        raise InputError(
            f"submission of {submission_id} to {url} failed: {_first_line(exc)}"
        ) from exc
    _record_submission(store, submission_id, url, cluster)
    return {"submission_id": submission_id, "address": url, "sweep_dir": store.uri}
