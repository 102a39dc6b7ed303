"""``sweeper validate FILE``: tell what a file under ``recipes/`` or ``clusters/`` is, and check it.

sweeper's own recipes and cluster files are validated fully; SLURM scripts, KubeRay manifests and
Ray cluster-launcher configs (the other files a cluster directory holds) are recognised and
checked lightly, or with Ray's own schema where Ray has one.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import TYPE_CHECKING, Any

from sweeper.config.loader import cluster_from_data, parse_yaml, read_text, recipe_from_data
from sweeper.errors import InputError

if TYPE_CHECKING:
    from sweeper.config.recipe import Recipe


def validate_path(path: str) -> str:
    """Check any file under ``recipes/`` or ``clusters/`` and return a one-line summary
    (``sweeper validate FILE``); ``InputError`` if it is invalid or not a file sweeper knows.
    See :func:`validate_file`."""
    return validate_file(path)[0]


def validate_file(path: str) -> tuple[str, Recipe | None]:
    """Check any file under ``recipes/`` or ``clusters/``: a one-line summary, and the recipe
    when the file is one; ``InputError`` if it is invalid or not a file sweeper knows.

    What a file is, decided in this order:

    1. a shell script (``.sh`` or ``#!``) with ``#SBATCH`` lines: a SLURM batch script; checked
       lightly (it starts Ray with ``ray start``);
    2. a YAML mapping with ``apiVersion`` and ``kind: RayCluster``: a KubeRay manifest; checked
       lightly (``spec.headGroupSpec``), the full check is ``kubectl apply --dry-run=server``;
    3. a YAML mapping with ``cluster_name`` and ``provider``: a Ray cluster-launcher config,
       checked against Ray's own schema (what ``ray up`` checks first);
    4. a YAML mapping with a top-level ``kind`` (``local`` | ``ray``): a sweeper cluster file;
    5. any other YAML mapping: a sweeper recipe.
    """
    text = read_text(path)
    if path.endswith(".sh") or text.startswith("#!"):
        return _validate_slurm(path, text), None
    data = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a recipe or cluster file (a YAML mapping)")
    if "apiVersion" in data:
        return _validate_kuberay(path, data), None
    if "cluster_name" in data and "provider" in data:
        return _validate_ray_launcher(path, data), None
    if "kind" in data:
        return cluster_from_data(data, path).summary(), None
    recipe = recipe_from_data(data, path)
    return recipe.summary(), recipe


def _validate_slurm(path: str, text: str) -> str:
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    if not sbatch:
        raise InputError(
            f"{path}: a shell script without #SBATCH lines is not a SLURM batch script"
        )
    if "ray start" not in text:
        raise InputError(f"{path}: SLURM script does not start Ray (no `ray start`)")
    return (
        f"SLURM batch script {os.path.basename(path)}: {len(sbatch)} #SBATCH lines, starts a Ray "
        f"head and workers (not parsed by sweeper; submit with `sbatch {path}`)"
    )


def _validate_kuberay(path: str, data: dict[str, Any]) -> str:
    kind = data.get("kind")
    if kind != "RayCluster":
        raise InputError(
            f"{path}: a Kubernetes manifest of kind {kind!r}; sweeper knows kind RayCluster only"
        )
    spec = data.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("headGroupSpec"), dict):
        raise InputError(f"{path}: spec.headGroupSpec: required in a RayCluster manifest")
    groups = spec.get("workerGroupSpecs") or []
    if not isinstance(groups, list):
        raise InputError(f"{path}: spec.workerGroupSpecs: must be a list")
    name = (data.get("metadata") or {}).get("name", "?")
    return (
        f"KubeRay RayCluster {name}: head + {len(groups)} worker group(s) (light check only; "
        f"full check: `kubectl apply --dry-run=server -f {path}`)"
    )


def _validate_ray_launcher(path: str, data: dict[str, Any]) -> str:
    check: Any = None
    try:  # Ray's own JSON-schema check, the first thing `ray up` does.
        from ray.autoscaler._private.util import prepare_config, validate_config

        def check(config: dict[str, Any]) -> None:
            validate_config(prepare_config(config))
    except Exception:  # Ray absent or moved: fall back to the light check below.
        check = None
    if check is not None:
        ray_log = logging.getLogger("ray.autoscaler")
        level = ray_log.level
        ray_log.setLevel(logging.WARNING)  # prepare_config logs its defaults at INFO
        try:
            check(copy.deepcopy(data))
        except Exception as err:
            where = ".".join(str(p) for p in getattr(err, "absolute_path", []) or [])
            msg = getattr(err, "message", None) or str(err).splitlines()[0]
            raise InputError(
                " ".join(
                    f"{path}: Ray cluster-launcher config: {where + ': ' if where else ''}{msg}".split()
                )
            ) from None
        finally:
            ray_log.setLevel(level)
    elif not isinstance(data.get("provider"), dict) or "type" not in data["provider"]:
        raise InputError(f"{path}: provider.type: required in a Ray cluster-launcher config")
    return (
        f"Ray cluster-launcher config {data['cluster_name']}: provider "
        f"{data['provider'].get('type', '?')}, max_workers {data.get('max_workers', '?')} "
        f"(not a sweeper file; start it with `ray up {path}`)"
    )
