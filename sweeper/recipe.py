"""Recipes: what to search (``space``), how (``search``), on what job (``job``), judged how
(``objective``) and run where (``run``). YAML validated by pydantic with ``extra="forbid"``.

Loading (:func:`load_recipe`) reads the YAML (duplicate keys are errors), applies ``--set
a.b.c=value`` overrides, validates the whole recipe and then checks what the schema alone cannot:

- every ``space`` key is a dotted key into ``job`` that the chosen job / loss kind reads, and every
  grid value (and both ends of every range) gives a valid job; a grid of up to
  ``GRID_CHECK_LIMIT`` points is checked point by point (catches e.g. ``cov_lb >= cov_ub``);
- ``search.kind: grid`` needs discrete axes (lists, ``choice``, ``int``); ``optuna`` needs
  ``n_trials``; the job and loss ``kind`` are fixed per recipe (each kind reads different
  parameters), never searched;
- clip parameters are not swept on a job whose updates are all on-policy (one mini-batch, one
  epoch: the ratio is identically 1, so no clip knob can act).

Every failure is an :class:`~sweeper.errors.InputError` with one line naming the file and field.
``inf`` is written ``.inf``, ``inf`` or ``Infinity``; :meth:`Recipe.resolved` writes it as the
string ``"inf"`` (standard JSON, and it validates back to the same recipe).
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sweeper.config.job import JobConfig, RLVRJob, check_engine_installed
from sweeper.errors import InputError, describe_validation_error
from sweeper.space import (
    ParamSpec,
    coerce_param_spec,
    describe_spec,
    endpoint_values,
    expand_grid,
    grid_size,
    is_discrete,
)

GRID_CHECK_LIMIT = 10_000
"""Grids up to this many points are validated point by point at load time."""

# Loss parameters that only matter when the ratio can leave 1 (off-policy updates).
_CLIP_PARAMS = ("eps_low", "eps_high", "dual_clip_c", "kl_coef")
_CLIP_PREFIXES = ("rescue_", "cov_", "beta_")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrunerConfig(_Strict):
    """An Optuna pruner acting on intermediate eval values of the objective metric."""

    kind: Literal["median", "percentile", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(2, ge=0, description="Trials finished before pruning starts.")
    n_warmup_steps: int = Field(0, ge=0, description="Steps before a trial can be pruned.")
    percentile: float = Field(25.0, gt=0.0, lt=100.0, description="For kind: percentile.")


class SearchConfig(_Strict):
    """How to search: a full grid, or Optuna's sampler for ``n_trials`` trials."""

    kind: Literal["grid", "optuna"] = "grid"
    sampler: Literal["tpe", "random", "cmaes", "gp", "qmc"] = Field(
        "tpe", description="Optuna sampler (kind: optuna)."
    )
    sampler_seed: int | None = Field(0, description="Seed of the Optuna sampler.")
    n_trials: int | None = Field(
        None, ge=1, description="Trials to run (optuna; grid runs every point)."
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0], min_length=1, description="Seeds per trial (int = count)."
    )
    max_concurrent: int = Field(4, ge=1, description="Jobs running at once.")
    pruner: PrunerConfig | None = None

    @field_validator("seeds", mode="before")
    @classmethod
    def _count_means_range(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("seeds must be >= 1 (a count) or a list of seeds")
            return list(range(value))
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds {value} contain duplicates (each job would run twice)")
        return value


_SCOPE = re.compile(r"^(last|avg|best|last-(\d+)-avg)$")


class ConstraintConfig(_Strict):
    """A feasibility condition on a metric's value at the last step where it was measured,
    per seed. ``min_ratio`` compares it with the first measured value (e.g. final entropy
    >= 0.5 x step-0 entropy)."""

    metric: str
    min: float | None = None
    max: float | None = None
    min_ratio: float | None = Field(None, ge=0.0)


class ObjectiveConfig(_Strict):
    """What ranks configs: ``metric`` over a trace ``scope``, aggregated over seeds."""

    metric: str = Field("mean_at_n", description="A trace column, e.g. pass_at_8, mean_at_n.")
    mode: Literal["max", "min"] = "max"
    scope: str = Field("last", description="last | avg | best | last-N-avg (over measured steps).")
    seed_agg: Literal["mean", "median", "min", "max"] = "mean"
    constraints: list[ConstraintConfig] = Field(default_factory=list)

    @field_validator("scope")
    @classmethod
    def _scope_form(cls, value: str) -> str:
        if not _SCOPE.match(value):
            raise ValueError(f"scope {value!r} must be last, avg, best or last-N-avg (N >= 1)")
        return value


class ResourcesConfig(_Strict):
    """Resources each job's worker holds (fractional GPUs allowed)."""

    num_cpus: float = Field(1.0, ge=0.0)
    num_gpus: float = Field(0.0, ge=0.0)
    custom: dict[str, float] = Field(default_factory=dict)


class RunConfig(_Strict):
    """Where results go and how faults are handled."""

    storage: str = Field("sweeps", description="Directory or URI holding sweep dirs.")
    max_retries: int = Field(2, ge=0, description="Retries of a job whose worker died.")
    optuna_storage: str | None = Field(
        None, description="SQLAlchemy URL of the Optuna study; default a file in the sweep dir."
    )
    resources: ResourcesConfig | None = Field(
        None, description="Per-job resources; overrides the cluster file's."
    )


class Recipe(_Strict):
    """A whole sweep."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    description: str = ""
    job: JobConfig = Field(default_factory=RLVRJob)
    space: dict[str, ParamSpec] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @field_validator("job", mode="before")
    @classmethod
    def _job_kind_defaults_to_rlvr(cls, value: object) -> object:
        # The job union is tagged by `kind`; a job block without one means the default, rlvr.
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "rlvr", **value}
        return value

    @field_validator("space", mode="before")
    @classmethod
    def _lists_are_grids(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: coerce_param_spec(v) for k, v in value.items()}
        return value

    # ----------------------------------------------------------------- semantic checks

    @model_validator(mode="after")
    def _space_fits_job(self) -> Recipe:
        _check_search(self)
        jobs = _check_space_values(self)
        _check_clipping_can_act(self, jobs)
        return self

    # ----------------------------------------------------------------- queries

    def param_keys(self) -> list[str]:
        """The searched parameters (dotted keys into ``job``), in recipe order."""
        return list(self.space)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid point (Cartesian product of the axes, last key varying fastest).
        ``ValueError`` if the space has a continuous distribution."""
        return expand_grid(self.space)

    def n_configs(self) -> int:
        """Configs (trials) this recipe runs: the grid size, or ``search.n_trials``."""
        if self.search.kind == "grid":
            return grid_size(self.space)
        return int(self.search.n_trials or 0)

    def n_jobs(self) -> int:
        """Jobs this recipe runs when nothing is pruned: configs x seeds."""
        return self.n_configs() * len(self.search.seeds)

    def job_for(self, params: dict[str, Any]) -> JobConfig:
        """The job of one trial: each dotted key of ``params`` assigned into the job block, and
        the job validated again. ``InputError`` (one line) if the result is not a valid job."""
        data = _job_data(self.job)
        for key, value in params.items():
            _assign(data, key.split("."), value, f"space.{key}")
        try:
            return _JobHolder.model_validate({"job": data}).job
        except ValidationError as err:
            raise InputError(explain_validation_error(err, _JobHolder, "")) from None

    def resolved(self) -> dict[str, Any]:
        """The fully resolved recipe (every default filled in) as JSON-able data; infinities are
        the strings ``"inf"`` / ``"-inf"``, so ``json.dumps`` writes standard JSON and
        ``Recipe.model_validate(resolved())`` gives back an equal recipe."""
        return _jsonable(self.model_dump(mode="python"))

    def summary(self) -> str:
        """One line: what runs, e.g. ``grid of 4 configs x 2 seeds = 8 jobs``."""
        seeds = len(self.search.seeds)
        if self.search.kind == "grid":
            how = f"grid of {self.n_configs()} configs"
        else:
            how = f"optuna {self.search.sampler} over {len(self.space)} params, {self.n_configs()} trials"
        loss = self.job.loss.kind
        pruner = self.search.pruner.kind if self.search.pruner else "none"
        return (
            f"recipe {self.name}: {how} x {seeds} seeds = {self.n_jobs()} jobs; "
            f"{self.job.kind} job, loss {loss}, {self.job.steps} steps; objective "
            f"{self.objective.mode} {self.objective.metric} ({self.objective.scope}); "
            f"pruner {pruner}"
        )


class _JobHolder(BaseModel):
    """Validates a job dict with error locations that start at ``job``."""

    model_config = ConfigDict(extra="forbid")
    job: JobConfig


# --------------------------------------------------------------------------- checks


def _check_search(recipe: Recipe) -> None:
    for key in ("kind", "loss.kind"):
        if key in recipe.space:
            raise ValueError(
                f"space.{key}: the {'loss' if key == 'loss.kind' else 'job'} kind cannot be "
                "searched (each kind reads different parameters); write one recipe per kind, "
                f"or pick one with --set job.{key}=..."
            )
    if recipe.search.kind == "grid":
        for key, spec in recipe.space.items():
            if not is_discrete(spec):
                raise ValueError(
                    f"space.{key}: {describe_spec(spec)} is a distribution, but search.kind is "
                    "grid; give a list of values, or use search.kind: optuna with n_trials"
                )
    else:
        if recipe.search.n_trials is None:
            raise ValueError("search.n_trials: required when search.kind is optuna")
        if not recipe.space:
            raise ValueError("space: empty, so optuna has nothing to search; use search.kind: grid")


def _checkable_grid(recipe: Recipe) -> list[dict[str, Any]] | None:
    """All points of the space when it is discrete and small enough to check them all."""
    if not all(is_discrete(spec) for spec in recipe.space.values()):
        return None
    if grid_size(recipe.space) > GRID_CHECK_LIMIT:
        return None
    return expand_grid(recipe.space)


def _contexts(recipe: Recipe, key: str) -> list[dict[str, Any]]:
    """Settings of the other searched keys to try a value of ``key`` with (their values, or the
    ends of their ranges), or none if there are too many."""
    others = {k: endpoint_values(spec) for k, spec in recipe.space.items() if k != key}
    if math.prod(len(v) for v in others.values()) > GRID_CHECK_LIMIT:
        return []
    keys = list(others)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*others.values())]


def _check_space_values(recipe: Recipe) -> list[Any]:
    """Check every value (and every point of a checkable grid); returns the jobs of the grid
    points (or of the base job when the grid is not checkable)."""
    # One key at a time first, so the message names the key at fault. A value that fails alone
    # may still be fine next to another key's value (cov_lb 6 is valid with cov_ub 10): it is
    # refused only if no setting of the other keys makes it valid.
    for key, spec in recipe.space.items():
        for value in endpoint_values(spec):
            try:
                recipe.job_for({key: value})
                continue
            except InputError as err:
                alone = err
            for context in _contexts(recipe, key):
                try:
                    recipe.job_for({**context, key: value})
                    break
                except InputError:
                    pass
            else:
                raise ValueError(
                    f"space.{key}: value {_show(value)} does not give a valid job: {alone}"
                ) from None
    # Then whole points: catches constraints across keys (cov_lb < cov_ub).
    jobs = []
    for point in _checkable_grid(recipe) or [{}]:
        try:
            jobs.append(recipe.job_for(point))
        except InputError as err:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in point.items())
            raise ValueError(f"space: point {{{shown}}} does not give a valid job: {err}") from None
    return jobs


def _is_clip_key(key: str) -> bool:
    if not key.startswith("loss."):
        return False
    name = key.removeprefix("loss.")
    return name in _CLIP_PARAMS or name.startswith(_CLIP_PREFIXES)


def _check_clipping_can_act(recipe: Recipe, jobs: list[Any]) -> None:
    clip_keys = [k for k in recipe.space if _is_clip_key(k)]
    if not clip_keys:
        return
    for job in jobs:
        if not getattr(job, "clipping_can_act", True):
            raise ValueError(
                f"space: sweeps clip parameters ({', '.join(clip_keys)}) but job.mini_batches="
                f"{getattr(job, 'mini_batches', '?')} and job.ppo_epochs="
                f"{getattr(job, 'ppo_epochs', '?')}: every update is on-policy (ratio = 1), so "
                "clipping cannot act; set job.mini_batches >= 2 (or job.ppo_epochs >= 2)"
            )


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


# --------------------------------------------------------------------------- data helpers


def _job_data(job: BaseModel) -> dict[str, Any]:
    """The validated job as plain data, every default filled in (as ``resolved()`` writes it,
    so a recipe and its resolved copy give the same jobs)."""
    return job.model_dump(mode="python")


def _assign(data: Any, parts: list[str], value: Any, where: str) -> None:
    """``data[p0][p1]...[pn] = value``, creating missing mappings on the way."""
    if not parts or any(p == "" for p in parts):
        raise InputError(f"{where}: empty path segment")
    node = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise InputError(f"{where}: {'.'.join(parts[:i]) or 'top level'} is not a mapping")
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise InputError(f"{where}: {'.'.join(parts[:-1])} is not a mapping")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- errors


def _unwrap(tp: Any) -> list[Any]:
    """The alternatives of a type: Annotated and Optional stripped, unions flattened."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _unwrap(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [t for a in get_args(tp) if a is not type(None) for t in _unwrap(a)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The field names of the model at an error location, or None if it cannot be told."""
    cands: list[Any] = [root]
    for part in loc:
        if isinstance(part, str) and "[" in part:
            continue  # pydantic's validator tags
        if len(cands) > 1 and isinstance(part, str):
            tagged = [
                c
                for c in cands
                if _is_model(c)
                and any(
                    d in c.model_fields and c.model_fields[d].default == part
                    for d in ("kind", "type")
                )
            ]
            if tagged:
                cands = tagged
                continue
        nxt: list[Any] = []
        for c in cands:
            if _is_model(c):
                if isinstance(part, str) and part in c.model_fields:
                    nxt += _unwrap(c.model_fields[part].annotation)
            elif get_origin(c) is dict:
                nxt += _unwrap(get_args(c)[1])
            elif get_origin(c) is list and isinstance(part, int):
                nxt += _unwrap(get_args(c)[0])
        if not nxt:
            return None
        cands = nxt
    models = [c for c in cands if _is_model(c)]
    return list(models[0].model_fields) if len(models) == 1 else None


def explain_validation_error(err: ValidationError, root: type[BaseModel], source: str = "") -> str:
    """``describe_validation_error`` plus, for an unknown key (a typo), the valid keys."""
    text = describe_validation_error(err, source)
    for e in err.errors():
        if e["type"] != "extra_forbidden":
            continue
        fields = _fields_at(root, tuple(e["loc"][:-1]))
        if fields:
            text += f" (valid keys: {', '.join(fields)})"
            break
    return " ".join(text.split())  # one line, whatever a message contained


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping (a silent overwrite
    otherwise)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def read_text(path: str) -> str:
    """A file's text; ``InputError`` naming the path if it cannot be read."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a YAML file")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read: {err}") from None


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> data; a syntax error or duplicate key is an ``InputError`` with its line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(" ".join(f"{source}: YAML error{where}: {problem}".split())) from None


def read_mapping(path: str, what: str) -> tuple[dict[str, Any], str]:
    """Read a YAML file that must hold a mapping; returns (data, text)."""
    text = read_text(path)
    data = parse_yaml(text, path)
    if data is None:
        raise InputError(f"{path}: empty file, expected a {what} (a YAML mapping)")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a {what} (a YAML mapping), got {type(data).__name__}")
    return data, text


def parse_override(override: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (path, value). The value is read as YAML (a scalar or a flow list /
    mapping: ``inf``, ``[0, 1, 2]``, ``{type: uniform, low: 0, high: 1}``). Under ``space`` the
    rest of the key is one dotted parameter key: ``space.loss.eps_low`` -> ["space",
    "loss.eps_low"]."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise InputError(f"--set {override!r}: expected KEY=VALUE, e.g. job.loss.eps_high=0.28")
    parts = key.split(".")
    if any(p == "" for p in parts):
        raise InputError(f"--set {override!r}: empty segment in key {key!r}")
    if parts[0] == "space":
        if len(parts) < 2:
            raise InputError(f"--set {override!r}: give space.<dotted key>=<values>")
        parts = ["space", ".".join(parts[1:])]
    value = parse_yaml(raw, f"--set {key}")
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``data`` with every ``--set`` override applied in order. ``space.<key>=null``
    removes that key from the space."""
    data = copy.deepcopy(data)
    for override in overrides:
        parts, value = parse_override(override)
        if parts[0] == "space" and value is None:
            space = data.get("space")
            if isinstance(space, dict):
                space.pop(parts[1], None)
            continue
        _assign(data, parts, value, f"--set {override}")
    return data


def recipe_from_data(data: dict[str, Any], source: str) -> Recipe:
    """Validate recipe data; ``InputError`` (one line naming ``source`` and the field)."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise InputError(explain_validation_error(err, Recipe, source)) from None


def load_recipe(path: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, str]:
    """Load, override, validate and check a recipe file.

    Returns the recipe and the YAML text as submitted; when overrides were given, the text ends
    with comment lines recording them (``# --set job.steps=20``), so the saved copy says how it
    was run. ``recipe.resolved()`` holds the effective values."""
    data, text = read_mapping(path, "recipe")
    if overrides:
        data = apply_overrides(data, overrides)
        if not text.endswith("\n"):
            text += "\n"
        text += "# sweeper: applied overrides\n" + "".join(f"# --set {o}\n" for o in overrides)
    return recipe_from_data(data, path), text


# --------------------------------------------------------------------------- sweeper validate


def validate_path(path: str) -> str:
    """Check any file under ``recipes/`` or ``clusters/`` and return a one-line summary
    (``sweeper validate FILE``); ``InputError`` if it is invalid or not a file sweeper knows.

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
        return _validate_slurm(path, text)
    data = parse_yaml(text, path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a recipe or cluster file (a YAML mapping)")
    if "apiVersion" in data:
        return _validate_kuberay(path, data)
    if "cluster_name" in data and "provider" in data:
        return _validate_ray_launcher(path, data)
    if "kind" in data:
        from sweeper.cluster import cluster_from_data

        return cluster_from_data(data, path).summary()
    recipe = recipe_from_data(data, path)
    check_engine_installed(recipe.job, path)  # e.g. engine: vllm without vllm installed
    return recipe.summary()


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
