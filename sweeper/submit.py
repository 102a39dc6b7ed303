"""Cluster mode: run a sweep's controller on a Ray cluster as a Ray Job.

``submit_sweep`` creates the sweep dir from the submitting side (so a relative path resolves
here, and the dir exists the moment the command returns), then submits
``python -m sweeper.cli resume <sweep dir> --address auto`` with ``submission_id`` = the sweep id,
shipping the ``sweeper`` package through ``runtime_env["py_modules"]``. The controller reads the
recipe from the sweep dir, so laptops can close: ``status``/``watch``/``stop``/``resume`` need only
the sweep dir. The storage must be reachable from the cluster (s3://..., or a shared file system).

Ray token auth (``RAY_AUTH_MODE=token``): the client sends the token found in ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``; a cluster file's ``auth_token_env`` names the
variable holding it. Set ``RAY_AUTH_MODE`` the same on the cluster and here.
"""

from __future__ import annotations

import os
import re
from typing import Any

import sweeper
from sweeper.controller import now_iso
from sweeper.errors import InputError
from sweeper.sweeps import prepare_sweep

# Environment passed on to the controller job (storage credentials, endpoints, auth mode).
FORWARDED_ENV = (
    "RAY_AUTH_MODE",
    "AWS_ENDPOINT_URL",
    "SWEEPER_S3_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "SWEEPER_CACHE",
)


def dashboard_url(address: str) -> str:
    """The Jobs API URL for an address: ``http(s)://host:port`` as given, else host:8265."""
    if address.startswith(("http://", "https://")):
        return address
    host = re.sub(r"^ray://", "", address).split(":")[0]
    if not host:
        raise InputError(f"bad cluster address {address!r}: expected http://host:8265")
    return f"http://{host}:8265"


def job_client(address: str, auth_token_env: str | None = None) -> Any:
    """A ``JobSubmissionClient`` for the cluster, with a one-line error if it cannot be reached."""
    from ray.job_submission import JobSubmissionClient

    if auth_token_env and os.environ.get(auth_token_env):
        os.environ.setdefault("RAY_AUTH_TOKEN", os.environ[auth_token_env])
    url = dashboard_url(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot reach the Ray cluster at {url}: {first}") from exc


def submit_sweep(
    recipe_path: str,
    overrides: list[str] | None,
    storage: str | None,
    cluster_path: str | None,
    address: str | None,
) -> dict[str, Any]:
    """Create the sweep dir and submit its controller as a Ray Job; returns at once."""
    from sweeper.cluster import load_cluster

    if not (cluster_path or address):
        raise InputError("submit needs --cluster FILE or --address URL")
    cluster = load_cluster(cluster_path) if cluster_path else None
    target = address or (cluster.address if cluster is not None else None)
    if not target:
        raise InputError(f"{cluster_path}: a cluster file for submit needs `address`")
    token_env = cluster.auth_token_env if cluster is not None else None
    client = job_client(target, token_env)  # fail before writing anything
    recipe, _, store = prepare_sweep(recipe_path, overrides, storage, cluster_path)
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    runtime_env: dict[str, Any] = dict(cluster.runtime_env) if cluster is not None else {}
    runtime_env.setdefault("py_modules", [os.path.dirname(sweeper.__file__)])
    runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
    submission_id = store.name
    try:
        client.submit_job(
            entrypoint=f"python -m sweeper.cli resume '{store.uri}' --address auto",
            submission_id=submission_id,
            runtime_env=runtime_env,
            metadata={"sweeper_sweep": store.uri},
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"submission of {submission_id} failed: {first}") from exc
    store.write_status(
        {
            "schema_version": 1,
            "sweep": recipe.name,
            "state": "submitted",
            "counts": {},
            "submission_id": submission_id,
            "address": dashboard_url(target),
            "updated_at": now_iso(),
        }
    )
    return {
        "submission_id": submission_id,
        "address": dashboard_url(target),
        "sweep_dir": store.uri,
    }
