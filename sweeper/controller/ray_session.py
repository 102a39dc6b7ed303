"""The Ray connection of a sweep: a private embedded Ray by default, or a cluster by address.

The embedded default is ``ray.init(address="local")`` with its own temp dir, bound to 127.0.0.1
only; sweeper never attaches to a running cluster by accident.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from sweeper.config.cluster import ClusterConfig
from sweeper.errors import InputError


@contextlib.contextmanager
def ray_session(cluster: ClusterConfig | None = None, address: str | None = None) -> Iterator[str]:
    """Connect to Ray for the duration of a sweep; yields the address.

    Embedded default: a private local instance (``address="local"``, own temp dir, loopback
    only), never an existing cluster found by accident. With ``address`` (or a ``ray`` cluster
    file) it connects there; ``auto`` is what a controller running as a Ray Job uses.
    """
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        yield ray.get_runtime_context().gcs_address
        return
    address = address or (
        cluster.address if cluster is not None and cluster.kind == "ray" else None
    )
    if address:
        target = address.removeprefix("http://").removeprefix("https://")
        if address.startswith("http"):  # a jobs/dashboard URL is not a GCS address
            raise InputError(f"{address}: use the GCS address (host:6379) or ray://host:10001 here")
        try:
            ray.init(address=target, log_to_driver=False)
        except Exception as exc:
            raise InputError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
    else:
        given_temp = cluster.temp_dir if cluster is not None else None
        own_temp = given_temp is None
        temp_dir = given_temp or tempfile.mkdtemp(prefix="sweeper-ray-")
        with _loopback_only():
            ray.init(
                address="local",
                _temp_dir=temp_dir,
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                num_cpus=cluster.num_cpus if cluster is not None else None,
                num_gpus=cluster.num_gpus if cluster is not None else None,  # type: ignore[arg-type]
                log_to_driver=False,
            )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if not address and own_temp:  # the private temp dir sweeper made (logs, sockets)
            shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Keep ``_node_ip_address="127.0.0.1"`` as given while the embedded Ray starts.

    Ray swaps a loopback node address for the machine's routable one
    (``services.resolve_ip_for_localhost``) unless its multi-node switch
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off. With the swap the GCS, raylet and agents
    listen on every interface; without it they bind 127.0.0.1 only. The switch is read at import
    time, so the module constant is set as well; both are restored afterwards.
    """
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
