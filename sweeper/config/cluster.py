"""Cluster files: where a sweep's jobs run. YAML validated by pydantic with ``extra="forbid"``.

A cluster file is a flat mapping whose top-level ``kind`` is ``local`` or ``ray``::

    name: gpu-cluster
    kind: ray
    address: http://head.example.com:8265   # Ray Jobs API (sweeper submit / resume)
    storage: s3://my-bucket/sweeps           # default storage for sweeps on this cluster
    resources: {num_cpus: 4, num_gpus: 0.5}  # per job; a recipe's run.resources wins
    runtime_env: {pip: [sweeper]}            # passed to Ray as is
    auth_token_env: RAY_AUTH_TOKEN           # env var holding the token (RAY_AUTH_MODE=token)

Addresses, and which commands use which form:

- ``http(s)://host:8265``: the Ray Jobs API (dashboard port). ``sweeper submit`` sends the
  controller to the cluster as a Ray Job there, and ``resume --address`` resubmits it; ``status``,
  ``watch`` and ``stop`` need only the sweep dir.
- ``ray://host:10001``: Ray Client. ``sweeper run --cluster`` can drive the cluster from this
  machine through it (the controller then dies with this process; prefer ``submit``).
- ``host:6379``: the GCS address, for a driver started on a cluster node (``ray start`` prints it;
  the SLURM script uses it).

Ray 2.60 enables token auth (``RAY_AUTH_MODE=token``): every client needs the cluster's token.
sweeper reads it from the variable named by ``auth_token_env`` (default ``RAY_AUTH_TOKEN``) and
never writes it to disk; a ``local`` cluster is started by sweeper itself and needs no token.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sweeper.config.base import StrictModel
from sweeper.config.recipe import NAME_PATTERN, Recipe, ResourcesConfig, check_name

# ray://host:port, http(s)://host[:port][/path], or bare host:port (GCS). Host: a name, IPv4 or
# [IPv6].
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
_PORT = r"(?:6553[0-5]|655[0-2]\d|65[0-4]\d{2}|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3})"
_ADDRESS_FORMS: dict[str, re.Pattern[str]] = {
    "client": re.compile(rf"^ray://{_HOST}:{_PORT}$"),
    "jobs": re.compile(rf"^https?://{_HOST}(?::{_PORT})?(?:/[^\s]*)?$"),
    "gcs": re.compile(rf"^{_HOST}:{_PORT}$"),
}

DEFAULT_TOKEN_ENV = "RAY_AUTH_TOKEN"
"""The environment variable holding a Ray cluster's auth token, unless a cluster file names
another (``auth_token_env``)."""

_LOCAL_ONLY = ("num_cpus", "num_gpus", "temp_dir")
_RAY_ONLY = ("address", "runtime_env", "auth_token_env")


def address_kind(address: str) -> Literal["client", "jobs", "gcs"]:
    """Which form an address has: ``client`` (ray://), ``jobs`` (http(s)://) or ``gcs``
    (host:port). ``ValueError`` for anything else."""
    for kind, pattern in _ADDRESS_FORMS.items():
        if pattern.match(address):
            return kind  # type: ignore[return-value]
    raise ValueError(
        f"address {address!r} must be ray://host:10001 (Ray Client), http(s)://host:8265 "
        "(Ray Jobs API) or host:port (GCS)"
    )


class ClusterConfig(StrictModel):
    """Where jobs run: ``local`` (an embedded Ray started by sweeper with a private temp dir; it
    never attaches to a running cluster) or ``ray`` (an existing cluster, by ``address``)."""

    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["local", "ray"] = Field(description="local | ray.")
    # local
    num_cpus: int | None = Field(
        None, ge=1, description="local: CPUs Ray may use (default: all of this machine's)."
    )
    num_gpus: float = Field(
        0.0,
        ge=0.0,
        le=1e6,
        description="local: logical GPUs Ray advertises (default 0; no CUDA check).",
    )
    temp_dir: str | None = Field(
        None, description="local: Ray's temp dir (default: a private dir sweeper creates)."
    )
    # ray
    address: str | None = Field(
        None, description="ray: http(s)://host:8265 (Jobs API), ray://host:10001, host:6379."
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="ray: Ray runtime_env for the controller and workers."
    )
    auth_token_env: str = Field(
        DEFAULT_TOKEN_ENV,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="ray: environment variable holding the cluster's auth token.",
    )
    # both
    storage: str | None = Field(
        None, description="Default storage (dir or URI, e.g. s3://bucket/sweeps) for sweeps here."
    )
    resources: ResourcesConfig | None = Field(
        None, description="Per-job resources (a recipe's run.resources wins)."
    )

    _name_is_one_component = field_validator("name")(check_name)

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str | None) -> str | None:
        if value is not None:
            address_kind(value)
        return value

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> ClusterConfig:
        given = self.model_fields_set
        if self.kind == "ray":
            if self.address is None:
                raise ValueError(
                    "address: required for kind ray (e.g. http://head:8265 or ray://head:10001)"
                )
            stray = [f for f in _LOCAL_ONLY if f in given]
        else:
            stray = [f for f in _RAY_ONLY if f in given]
        if stray:
            raise ValueError(
                f"{', '.join(stray)}: not used by kind {self.kind} "
                f"({'local: ' + ', '.join(_LOCAL_ONLY) if self.kind == 'local' else 'ray: ' + ', '.join(_RAY_ONLY)})"
            )
        return self

    @property
    def address_kind(self) -> Literal["client", "jobs", "gcs"] | None:
        """``client`` / ``jobs`` / ``gcs`` for a ray cluster, None for local."""
        return address_kind(self.address) if self.address else None

    def auth_token(self) -> str | None:
        """The Ray auth token from ``auth_token_env`` (None if unset or a local cluster)."""
        return read_auth_token(self) if self.kind == "ray" else None

    def summary(self) -> str:
        """One line, e.g. ``cluster gpu: ray at http://head:8265 (Jobs API)``."""
        if self.kind == "local":
            cpus = self.num_cpus if self.num_cpus is not None else "all"
            where = f"local Ray, {cpus} CPUs, {self.num_gpus:g} logical GPUs"
        else:
            form = {"client": "Ray Client", "jobs": "Jobs API", "gcs": "GCS"}[
                self.address_kind or "jobs"
            ]
            where = f"ray at {self.address} ({form}); token from ${self.auth_token_env}"
        res = resolve_resources(None, self)
        extra = f"; per job {res.num_cpus:g} CPU, {res.num_gpus:g} GPU"
        if self.storage:
            extra += f"; storage {self.storage}"
        return f"cluster {self.name}: {where}{extra}"


def default_local_cluster() -> ClusterConfig:
    """The embedded default (what ``clusters/local.yaml`` spells out): local Ray, all CPUs, no
    GPUs, a private temp dir."""
    return ClusterConfig(name="local", kind="local")


def resolve_resources(recipe: Recipe | None, cluster: ClusterConfig | None) -> ResourcesConfig:
    """Per-job resources: the recipe's ``run.resources`` if set, else the cluster's, else the
    default (1 CPU, 0 GPUs)."""
    if recipe is not None and recipe.run.resources is not None:
        return recipe.run.resources
    if cluster is not None and cluster.resources is not None:
        return cluster.resources
    return ResourcesConfig()


def resolve_storage(
    recipe: Recipe, cluster: ClusterConfig | None = None, cli_storage: str | None = None
) -> str:
    """Where sweep dirs go: ``--storage`` if given, else the recipe's ``run.storage`` when the
    recipe sets it, else the cluster's ``storage``, else the recipe default (``sweeps``). A
    relative local path is made absolute here, on the submitting side, so a job's working dir
    never swallows results."""
    if cli_storage:
        chosen = cli_storage
    elif "storage" in recipe.run.model_fields_set:
        chosen = recipe.run.storage
    elif cluster is not None and cluster.storage:
        chosen = cluster.storage
    else:
        chosen = recipe.run.storage
    return chosen if "://" in chosen else os.path.abspath(chosen)


def read_auth_token(cluster: ClusterConfig | None = None) -> str | None:
    """The Ray auth token held in the cluster file's ``auth_token_env`` (default
    ``RAY_AUTH_TOKEN``); None when unset. Never written anywhere by sweeper."""
    name = cluster.auth_token_env if cluster is not None else DEFAULT_TOKEN_ENV
    return os.environ.get(name, "").strip() or None
