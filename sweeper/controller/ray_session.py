"""The Ray connection of a sweep: a private embedded Ray by default, or a cluster by address.

The embedded default is ``ray.init(address="local")`` with its own temp dir, bound to 127.0.0.1
only; sweeper never attaches to a running cluster by accident.

Start-up is quiet and bounded: Ray's own start-up logging (its Python loggers, and what its C++
core prints on file descriptor 2 while connecting) is kept off stderr, a connection to a cluster
gives up after one attempt (``RAY_gcs_server_port_wait_time_s``, about 40 s, instead of Ray's
20 retries), and a loopback cluster address stays loopback. Whether something listens at the
address at all is checked before this, in seconds (:mod:`sweeper.preflight`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from sweeper.config.cluster import ClusterConfig
from sweeper.errors import InputError

_CONNECT_ATTEMPTS_ENV = "RAY_gcs_server_port_wait_time_s"
"""Ray's budget (seconds, one attempt a second) for finding the GCS of a cluster it joins."""

_LOOPBACK_HOSTS = ("127.", "localhost", "[::1]", "::1")


@contextlib.contextmanager
def ray_session(cluster: ClusterConfig | None = None, address: str | None = None) -> Iterator[str]:
    """Connect to Ray for the duration of a sweep; yields the address.

    Embedded default: a private local instance (``address="local"``, own temp dir, loopback
    only), never an existing cluster found by accident. With ``address`` (or a ``ray`` cluster
    file) it connects there; ``auto`` is what a controller running as a Ray Job uses. A cluster
    that cannot be joined is an :class:`InputError` (one line).
    """
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        yield ray.get_runtime_context().gcs_address
        return
    address = address or (
        cluster.address if cluster is not None and cluster.kind == "ray" else None
    )
    own_temp, temp_dir = False, ""
    if address:
        target = address.removeprefix("http://").removeprefix("https://")
        if address.startswith("http"):  # a jobs/dashboard URL is not a GCS address
            raise InputError(f"{address}: use the GCS address (host:6379) or ray://host:10001 here")
        loopback = _is_loopback(target)
        try:
            with _quiet_start(), _one_connect_attempt(), _loopback_only(loopback):
                ray.init(address=target, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:
            raise InputError(
                f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}"
            ) from None
    else:
        given_temp = cluster.temp_dir if cluster is not None else None
        own_temp = given_temp is None
        temp_dir = given_temp or tempfile.mkdtemp(prefix="sweeper-ray-")
        try:
            with _quiet_start(), _loopback_only(True):
                ray.init(
                    address="local",
                    _temp_dir=temp_dir,
                    _node_ip_address="127.0.0.1",
                    include_dashboard=False,
                    num_cpus=cluster.num_cpus if cluster is not None else None,
                    num_gpus=cluster.num_gpus if cluster is not None else None,  # type: ignore[arg-type]
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
        except BaseException:
            if own_temp:
                shutil.rmtree(temp_dir, ignore_errors=True)
            raise
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if own_temp:  # the private temp dir sweeper made (logs, sockets)
            shutil.rmtree(temp_dir, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__


def _is_loopback(target: str) -> bool:
    host = target.removeprefix("ray://").rsplit(":", 1)[0]
    return host.startswith(_LOOPBACK_HOSTS)


@contextlib.contextmanager
def _quiet_start() -> Iterator[None]:
    """Keep what Ray prints while it starts or connects off stderr.

    Ray's Python loggers are set by ``logging_level``; its C++ core writes to file descriptor
    2 directly ("Failed to connect to GCS ... within 5 seconds"), so that descriptor points at
    a scratch file for the duration (a failure is then reported as one line by the caller).
    Nothing else of this process writes while Ray starts."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured by a test runner)
        fd = 2
    with tempfile.TemporaryFile() as scratch:
        sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(scratch.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)


@contextlib.contextmanager
def _one_connect_attempt() -> Iterator[None]:
    """Join a cluster with one attempt (unless the user set Ray's budget): Ray otherwise retries
    a silent GCS 20 times, for many minutes."""
    if _CONNECT_ATTEMPTS_ENV in os.environ:
        yield
        return
    os.environ[_CONNECT_ATTEMPTS_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(_CONNECT_ATTEMPTS_ENV, None)


@contextlib.contextmanager
def _loopback_only(active: bool = True) -> Iterator[None]:
    """Keep a loopback node address (``127.0.0.1``) as given while Ray starts or connects.

    Ray swaps a loopback node address for the machine's routable one
    (``services.resolve_ip_for_localhost``) unless its multi-node switch
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off. With the swap the GCS, raylet and agents
    listen on every interface (and a driver joining ``127.0.0.1:port`` dials the machine's
    routable address instead); without it they bind 127.0.0.1 only. The switch is read at
    import time, so the module constant is set as well; both are restored afterwards.
    """
    if not active:
        yield
        return
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env, saved_const = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name] = "0"  # also for the processes ray.init spawns
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved_env
