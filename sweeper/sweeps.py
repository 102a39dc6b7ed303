"""What users do with sweeps — run, resume, stop, look up — as plain functions the CLI calls.

Each function takes paths/URIs and returns data; printing is the CLI's job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sweeper.config.cluster import ClusterConfig, resolve_storage
from sweeper.config.loader import load_cluster, load_recipe
from sweeper.config.recipe import Recipe
from sweeper.controller import Controller, ray_session, write_control
from sweeper.errors import InputError
from sweeper.search import storage_url
from sweeper.store import SweepStore

DEFAULT_STORAGE = "sweeps"


def open_sweep(sweep: str) -> SweepStore:
    """A sweep dir by path or URI; a bare name is looked up under ./sweeps/."""
    if "://" not in sweep and not os.path.exists(sweep):
        candidate = os.path.join(DEFAULT_STORAGE, sweep)
        if os.path.exists(candidate):
            sweep = candidate
    return SweepStore.open(sweep)


def check_sweep_inputs(
    recipe_path: str,
    overrides: list[str] | None = None,
    storage: str | None = None,
    cluster_path: str | None = None,
) -> tuple[Recipe, str, ClusterConfig | None, str]:
    """Validate everything a new sweep needs, writing nothing: returns the recipe, its YAML text,
    the cluster file (if any) and the storage root."""
    recipe, text = load_recipe(recipe_path, list(overrides or []))
    cluster = load_cluster(cluster_path) if cluster_path else None
    root = resolve_storage(recipe, cluster, storage)
    storage_url(
        recipe, SweepStore(f"{root.rstrip('/')}/{recipe.name}")
    )  # refuses what cannot hold a study
    return recipe, text, cluster, root


def create_sweep_dir(
    recipe: Recipe, text: str, root: str, recipe_path: str, overrides: list[str] | None
) -> SweepStore:
    """Create ``<root>/<recipe.name>/`` with the recipe, its resolved form and the manifest
    (refusing to overwrite an existing sweep)."""
    from sweeper.store import manifest

    return SweepStore.create(
        root,
        recipe.name,
        recipe_text=text,
        resolved=recipe.resolved(),
        manifest=manifest({"recipe_path": os.path.abspath(recipe_path), "overrides": overrides}),
    )


def prepare_sweep(
    recipe_path: str,
    overrides: list[str] | None = None,
    storage: str | None = None,
    cluster_path: str | None = None,
) -> tuple[Recipe, ClusterConfig | None, SweepStore]:
    """Validate the recipe and cluster file and create the sweep dir (refusing to overwrite)."""
    recipe, text, cluster, root = check_sweep_inputs(recipe_path, overrides, storage, cluster_path)
    return recipe, cluster, create_sweep_dir(recipe, text, root, recipe_path, overrides)


def run_sweep(
    recipe: Recipe,
    store: SweepStore,
    cluster: ClusterConfig | None = None,
    address: str | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a prepared sweep in this process until it ends; returns the final status."""
    with ray_session(cluster, address=address):
        embedded = address is None and (cluster is None or cluster.kind == "local")
        controller = Controller(
            recipe, store, cluster=cluster, on_update=on_update, fixed_size=embedded
        )
        return controller.run(resume=resume)


def load_sweep_recipe(store: SweepStore) -> Recipe:
    """The recipe a sweep was started with (as resolved then)."""
    return Recipe.model_validate(store.read_resolved())


def resume_sweep(
    sweep: str,
    cluster_path: str | None = None,
    address: str | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Finish a sweep whose controller ended: finished trials are kept, unfinished ones rerun."""
    store = open_sweep(sweep)
    status = store.read_status() or {}
    controller = status.get("controller", {})
    if status.get("state") == "running" and _alive_here(controller):
        raise InputError(
            f"{store.uri}: its controller is still running (pid {controller.get('pid')}); "
            "`sweeper stop` it first"
        )
    cluster = load_cluster(cluster_path) if cluster_path else None
    return run_sweep(load_sweep_recipe(store), store, cluster, address, on_update, resume=True)


def request_stop(sweep: str) -> SweepStore:
    """Ask a running sweep's controller to end cleanly (running jobs stop, results stay)."""
    store = open_sweep(sweep)
    write_control(store, stop=True)
    return store


def _alive_here(controller: dict[str, Any]) -> bool:
    import socket

    if controller.get("host") != socket.gethostname() or not controller.get("pid"):
        return False
    try:
        os.kill(int(controller["pid"]), 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
