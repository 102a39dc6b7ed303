"""What users do with sweeps — run, resume, stop, validate, look up — as plain functions the
CLI calls.

Each function takes paths/URIs and returns data; printing is the CLI's job. A new sweep is
checked in full before anything is written (:func:`check_sweep_inputs`: the recipe, the cluster
file and :func:`sweeper.preflight.preflight`); a run that still fails while starting removes
what it created (:func:`run_sweep`); ``resume`` and ``stop`` of a sweep that has ended change
nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sweeper.config.cluster import ClusterConfig, resolve_storage
from sweeper.config.files import validate_file
from sweeper.config.loader import load_cluster, load_recipe
from sweeper.config.recipe import Recipe
from sweeper.controller import Controller, ray_session, write_control
from sweeper.errors import InputError
from sweeper.preflight import Command, Where, creatable, preflight
from sweeper.store import SweepStore

ENDED_STATES = ("finished", "stopped", "failed", "submit-failed")
"""status.json states of a sweep whose controller has ended."""

_CREATED: dict[str, Path | None] = {}
"""Sweep dirs this process created, by URI: the first directory of its local path that did not
exist before (the sweep dir or an ancestor), or None when the sweep dir was there (empty)."""

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
    address: str | None = None,
    command: Command = "run",
) -> tuple[Recipe, str, ClusterConfig | None, str]:
    """Check everything a new sweep needs, writing nothing: the recipe (with ``--set``), the
    cluster file and every preflight check that applies to where the sweep will run (files,
    modules, packages, resources, storage, the cluster's address). Returns the recipe, its YAML
    text, the cluster file (if any) and the storage root; ``InputError`` (one line) on the
    first problem."""
    recipe, text = load_recipe(recipe_path, list(overrides or []))
    cluster = load_cluster(cluster_path) if cluster_path else None
    root = resolve_storage(recipe, cluster, storage)
    preflight(recipe, Where.of(command, cluster, address, root))
    return recipe, text, cluster, root


def validate(path: str, cluster_path: str | None = None, address: str | None = None) -> str:
    """``sweeper validate``: check a recipe or cluster file and return a one-line summary. A
    recipe also gets the preflight checks for where it would run (here, unless a cluster file
    or address says otherwise); nothing is created."""
    summary, recipe = validate_file(path)
    if recipe is not None:
        cluster = load_cluster(cluster_path) if cluster_path else None
        preflight(recipe, Where.of("validate", cluster, address))
    return summary


def create_sweep_dir(
    recipe: Recipe, text: str, root: str, recipe_path: str, overrides: list[str] | None
) -> SweepStore:
    """Create ``<root>/<recipe.name>/`` with the recipe, its resolved form and the manifest
    (refusing to overwrite an existing sweep)."""
    from sweeper.store import manifest

    target = SweepStore(f"{root.rstrip('/')}/{recipe.name}")
    first_new = _first_missing(Path(target.path())) if target.is_local else None
    store = SweepStore.create(
        root,
        recipe.name,
        recipe_text=text,
        resolved=recipe.resolved(),
        manifest=manifest({"recipe_path": os.path.abspath(recipe_path), "overrides": overrides}),
    )
    _CREATED[store.uri] = first_new
    return store


def sweep_dirs_made(store: SweepStore) -> Path | None:
    """For a sweep dir :func:`create_sweep_dir` made: the topmost directory it had to create
    (None when the sweep dir was there, empty); forgets it (see :func:`remove_new_sweep`)."""
    return _CREATED.pop(store.uri, None)


def _first_missing(path: Path) -> Path | None:
    """The topmost directory of ``path`` that does not exist yet (None if ``path`` exists)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def prepare_sweep(
    recipe_path: str,
    overrides: list[str] | None = None,
    storage: str | None = None,
    cluster_path: str | None = None,
    address: str | None = None,
) -> tuple[Recipe, ClusterConfig | None, SweepStore]:
    """Check the recipe, the cluster file and the preflight, then create the sweep dir."""
    recipe, text, cluster, root = check_sweep_inputs(
        recipe_path, overrides, storage, cluster_path, address
    )
    return recipe, cluster, create_sweep_dir(recipe, text, root, recipe_path, overrides)


def run_sweep(
    recipe: Recipe,
    store: SweepStore,
    cluster: ClusterConfig | None = None,
    address: str | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a prepared sweep in this process until it ends; returns the final status.

    A new sweep (made by :func:`prepare_sweep`) that fails before its first job started -- Ray
    does not start, the cluster refuses, Ctrl-C -- is removed again, so the fixed recipe can run
    under the same name; a resumed sweep is never removed."""
    with _removed_if_start_fails(store, resume), ray_session(cluster, address=address):
        embedded = address is None and (cluster is None or cluster.kind == "local")
        controller = Controller(
            recipe, store, cluster=cluster, on_update=on_update, fixed_size=embedded
        )
        return controller.run(resume=resume)


@contextlib.contextmanager
def _removed_if_start_fails(store: SweepStore, resume: bool) -> Iterator[None]:
    made_here = store.uri in _CREATED
    first_new = _CREATED.pop(store.uri, None)
    try:
        yield
    except BaseException:
        if not resume and made_here and not store.has_runs():
            remove_new_sweep(store, first_new)
        raise


def remove_new_sweep(store: SweepStore, first_new: Path | None) -> None:
    """Remove what creating a new sweep wrote: its directory and every directory made for it
    (``first_new``, the topmost one that was new), or only its contents when the sweep dir was
    there before, empty."""
    if not store.is_local:
        store.remove_tree()
    elif first_new is not None:
        shutil.rmtree(first_new, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            for child in Path(store.path()).iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def load_sweep_recipe(store: SweepStore) -> Recipe:
    """The recipe a sweep was started with (as resolved then)."""
    return Recipe.model_validate(store.read_resolved())


def resume_sweep(
    sweep: str,
    cluster_path: str | None = None,
    address: str | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Finish a sweep whose controller ended: finished trials are kept, unfinished ones rerun.

    A sweep that finished is left as it is: the status is returned with a ``note`` saying
    there is nothing to resume."""
    store = open_sweep(sweep)
    status = store.read_status() or {}
    note = finished_note(store, status)
    if note:
        return {**status, "note": note}
    controller = status.get("controller", {})
    if status.get("state") == "running" and _alive_here(controller):
        raise InputError(
            f"{store.uri}: its controller is still running (pid {controller.get('pid')}); "
            "`sweeper stop` it first"
        )
    cluster = load_cluster(cluster_path) if cluster_path else None
    recipe = load_sweep_recipe(store)
    if address != "auto":  # "auto": the controller job of `submit`, on the cluster itself
        preflight(recipe, Where.of("run", cluster, address))
    return run_sweep(recipe, store, cluster, address, on_update, resume=True)


def finished_note(store: SweepStore, status: dict[str, Any] | None = None) -> str | None:
    """A line saying there is nothing to resume, for a sweep whose controller finished it (every
    trial ran); None for a sweep that can be resumed (stopped, killed, crashed, never started)."""
    status = store.read_status() if status is None else status
    if status.get("state") != "finished":
        return None
    counts = status.get("counts") or {}
    done = ", ".join(
        f"{counts[k]} {k.lower()}" for k in ("COMPLETE", "PRUNED", "FAIL") if counts.get(k)
    )
    return f"{store.uri}: the sweep has finished ({done or 'no trials'}); nothing to resume"


def request_stop(sweep: str) -> str:
    """Ask a running sweep's controller to end cleanly (running jobs stop, results stay);
    returns what was done. A sweep whose controller has ended, or whose controller on this
    machine is gone, is left as it is."""
    store = open_sweep(sweep)
    status = store.read_status()
    state = status.get("state")
    if state in ENDED_STATES:
        return f"{store.uri}: the sweep has already ended ({state}); nothing to stop"
    controller = status.get("controller") or {}
    if state == "running" and _on_this_host(controller) and not _alive_here(controller):
        return (
            f"{store.uri}: its controller (pid {controller.get('pid')}) is no longer running; "
            "nothing to stop (`sweeper resume` continues the sweep)"
        )
    write_control(store, stop=True)
    return f"stop requested for {store.uri}; `sweeper resume` continues it later"


def check_output(path: str, option: str, directory: bool) -> None:
    """``--out PATH`` can be written: a directory (``export``) or a file (``report``) that is
    there as such or can be created. Remote URIs are left to the write."""
    if "://" in path:
        return
    if not path.strip():
        raise InputError(f"{option}: empty path")
    creatable(Path(path), option, directory=directory)


def _on_this_host(controller: dict[str, Any]) -> bool:
    import socket

    return controller.get("host") == socket.gethostname() and bool(controller.get("pid"))


def _alive_here(controller: dict[str, Any]) -> bool:
    if not _on_this_host(controller):
        return False
    try:
        os.kill(int(controller["pid"]), 0)
    except PermissionError:  # it exists, under another user
        return True
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    return True
