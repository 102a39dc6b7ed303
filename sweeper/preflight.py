"""Preflight: every check of a new sweep that can run before anything is written.

The schemas and :mod:`sweeper.config.checks` judge a recipe by itself (fields, bounds, metrics
the job produces). The checks here judge it against where it is about to run: files, modules
and packages the jobs need, the resources one job holds, the storage, the cluster's address.
``run``, ``submit`` and ``validate`` call :func:`preflight` before the sweep dir is created,
so bad input costs one line and writes nothing.

A check runs only where what it checks lives (:class:`Where`): a task file is read by the
workers, so it is checked here only when the workers run here (the embedded local Ray); a
sampler's package is needed by the controller (here for ``run``, on the cluster for
``submit``). Checks are a registry: :func:`register` adds one (a rollout engine's package, a
reward verifier's), and ``tests/integration/test_bad_input.py`` runs them all.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from sweeper.config.cluster import ClusterConfig, address_kind, resolve_resources
from sweeper.config.job import FileTask, RLVRJob, UserTask, check_engine_installed
from sweeper.config.recipe import Recipe
from sweeper.config.space import axis_values, is_discrete
from sweeper.config.task_files import read_task_rows
from sweeper.errors import InputError
from sweeper.store import SweepStore

ADDRESS_TIMEOUT = 5.0
"""Seconds a cluster address has to accept a TCP connection before it is reported down."""

JOBS_API_PORT = 8265
"""The Ray dashboard's port (the Jobs API) when an address names another port."""

TASK_ROWS_CHECKED = 100
"""Records of a task file read and checked before the sweep starts."""

Command = Literal["run", "submit", "validate"]
Scope = Literal["anywhere", "controller", "workers"]


@dataclass(frozen=True)
class Where:
    """Where the parts of a sweep will run, as far as the checks need to know.

    Attributes:
        command: what asked (``run``, ``submit``, ``validate``).
        cluster: the cluster file, if one was given.
        address: the cluster address (``--address`` or the cluster file's), None for the
            embedded local Ray.
        storage: the storage root the sweep dir goes into (None: nothing will be created).
    """

    command: Command
    cluster: ClusterConfig | None = None
    address: str | None = None
    storage: str | None = None

    @classmethod
    def of(
        cls,
        command: Command,
        cluster: ClusterConfig | None = None,
        address: str | None = None,
        storage: str | None = None,
    ) -> Where:
        """``address`` wins over the cluster file's (as in ``run`` and ``submit``)."""
        if address is None and cluster is not None and cluster.kind == "ray":
            address = cluster.address
        return cls(command, cluster, address, storage)

    @property
    def submits(self) -> bool:
        """The controller runs on the cluster as a Ray Job (``submit``, or validating for a
        Jobs API address)."""
        if self.command == "submit":
            return True
        return (
            self.command == "validate"
            and self.address is not None
            and address_kind(self.address) == "jobs"
        )

    @property
    def controller_here(self) -> bool:
        """The controller (sampler, study storage) runs in this process."""
        return not self.submits

    @property
    def workers_here(self) -> bool:
        """The jobs run on this machine: the embedded local Ray."""
        return not self.submits and self.address is None


@dataclass(frozen=True)
class Check:
    """One preflight check: ``run(recipe, where)`` raises :class:`InputError` (one line)."""

    name: str
    scope: Scope
    run: Callable[[Recipe, Where], None]
    summary: str = ""

    def applies(self, where: Where) -> bool:
        """Whether what this check looks at is where it would run."""
        if self.scope == "controller":
            return where.controller_here
        if self.scope == "workers":
            return where.workers_here
        return True


CHECKS: dict[str, Check] = {}
"""Every preflight check by name, in the order they run (cheap and local first, network last)."""


def register(name: str, scope: Scope, summary: str = "") -> Callable[[Any], Any]:
    """Decorator: add ``fn(recipe, where)`` to :data:`CHECKS` (a name registered again replaces
    the old check in place)."""

    def add(fn: Callable[[Recipe, Where], None]) -> Callable[[Recipe, Where], None]:
        CHECKS[name] = Check(name, scope, fn, summary or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return add


def preflight(recipe: Recipe, where: Where) -> None:
    """Run every check that applies to ``where``; the first failure raises ``InputError``."""
    for check in list(CHECKS.values()):
        if check.applies(where):
            check.run(recipe, where)


def job_variants(recipe: Recipe) -> list[Any]:
    """The base job and the job of each discrete value of each searched key alone (so a swept
    ``task.path`` or ``policy.name`` is checked for every value) -- not the whole grid."""
    points: list[dict[str, Any]] = [{}]
    for key, spec in recipe.space.items():
        if is_discrete(spec) and not key.startswith("loss."):
            with contextlib.suppress(ValueError):
                points += [{key: v} for v in axis_values(spec)[:1000]]
    jobs, seen = [], set()
    for point in points:
        job = recipe.job_for(point)
        key = job.model_dump_json()
        if key not in seen:
            seen.add(key)
            jobs.append(job)
    return jobs


def _rlvr_jobs(recipe: Recipe) -> Iterator[RLVRJob]:
    yield from (j for j in job_variants(recipe) if isinstance(j, RLVRJob))


# --------------------------------------------------------------------------- packages


@register("sampler_packages", "controller")
def _sampler_packages(recipe: Recipe, where: Where) -> None:
    """The Optuna sampler's optional packages are installed where the controller runs."""
    from sweeper.search.samplers import SAMPLERS, missing_packages

    if recipe.search.kind != "optuna" or recipe.search.sampler not in SAMPLERS:
        return
    missing = missing_packages(recipe.search.sampler)
    if missing:
        raise InputError(
            f"search.sampler: {recipe.search.sampler} needs {', '.join(missing)}, which is not "
            "installed here"
        )


@register("job_packages", "workers")
def _job_packages(recipe: Recipe, where: Where) -> None:
    """The packages the jobs need where they run: the RL stack, the rollout engine's (vLLM),
    peft for LoRA, math-verify for its verifier."""
    for job in _rlvr_jobs(recipe):
        check_engine_installed(job)
        needs = [("torch", "the `rl` extra: pip install 'sweeper[rl]'")]
        needs.append(("transformers", "the `rl` extra: pip install 'sweeper[rl]'"))
        if job.policy.lora is not None:
            needs.append(("peft", "policy.lora: pip install peft"))
        if getattr(job.task, "verifier", None) == "math_verify":
            needs.append(("math_verify", "task.verifier math_verify: pip install math-verify"))
        for module, hint in needs:
            if importlib.util.find_spec(module) is None:
                raise InputError(f"the `{module}` package is not installed here ({hint})")


@register("optuna_storage", "anywhere")
def _optuna_storage(recipe: Recipe, where: Where) -> None:
    """``run.optuna_storage``, when set, is an SQLAlchemy URL (or a path) whose driver is
    installed where the controller runs. (It is optional everywhere: the study is rebuilt from
    the sweep dir, s3:// included; the database only mirrors it.)"""
    url = recipe.run.optuna_storage
    if url is None:
        return
    if "://" not in url:  # a bare path: an SQLite file there
        url = "sqlite:///" + os.path.abspath(url)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(
            f"run.optuna_storage: {recipe.run.optuna_storage!r} is not an SQLAlchemy URL "
            "(e.g. sqlite:////abs/path/optuna.db or postgresql://user@host/db)"
        ) from None
    if not where.controller_here:
        return
    from sqlalchemy import create_engine

    try:  # loads the dialect and its driver; connects to nothing
        create_engine(parsed).dispose()
    except NoSuchModuleError:
        raise InputError(
            f"run.optuna_storage: unknown database kind {parsed.drivername!r} in "
            f"{recipe.run.optuna_storage!r}"
        ) from None
    except ImportError as err:
        raise InputError(
            f"run.optuna_storage: {parsed.drivername} needs the `{err.name}` package, which is "
            "not installed here"
        ) from None
    except Exception as err:  # bad options in the URL
        raise InputError(f"run.optuna_storage: {recipe.run.optuna_storage!r}: {err}") from None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        creatable(Path(parsed.database), "run.optuna_storage")


# --------------------------------------------------------------------------- what jobs read


@register("task_files", "workers")
def _task_files(recipe: Recipe, where: Where) -> None:
    """GSM8K-style task files exist and their first records parse and hold the keys."""
    seen = set()
    for job in _rlvr_jobs(recipe):
        task = job.task
        if not isinstance(task, FileTask) or task.path in seen:
            continue
        seen.add(task.path)
        rows = read_task_rows(task.path, limit=TASK_ROWS_CHECKED, where="job.task.path")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(
                    f"job.task.path: {task.path}: row {i} is a {type(row).__name__}, not a record"
                )
            if task.question_key not in row or task.answer_key not in row:
                raise InputError(
                    f"job.task.path: {task.path}: row {i} lacks '{task.question_key}' or "
                    f"'{task.answer_key}' (has {', '.join(sorted(map(str, row)))}); set "
                    "job.task.question_key / job.task.answer_key"
                )
        if len(rows) < 2:
            raise InputError(f"job.task.path: {task.path}: needs at least 2 rows, has {len(rows)}")


@register("user_tasks", "workers")
def _user_tasks(recipe: Recipe, where: Where) -> None:
    """A user task's module can be found (without running it) and defines the function."""
    seen = set()
    for job in _rlvr_jobs(recipe):
        task = job.task
        if not isinstance(task, UserTask) or task.fn in seen:
            continue
        seen.add(task.fn)
        module, _, fn = task.fn.partition(":")
        try:
            with _cwd_on_path():
                spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as err:  # a parent package that fails to import
            raise InputError(f"job.task.fn: cannot import module {module!r}: {err}") from None
        if spec is None:
            raise InputError(
                f"job.task.fn: no module {module!r} on the Python path (the workers import it: put "
                "it in the working directory or on PYTHONPATH)"
            )
        origin = spec.origin or ""
        if origin.endswith(".py") and _defines(origin, fn) is False:
            raise InputError(f"job.task.fn: {origin} defines no {fn!r} (task.fn is {task.fn!r})")


def _defines(path: str, name: str) -> bool | None:
    """Whether a module file binds ``name`` at top level (a def, class, assignment or import),
    found by parsing it, not running it; None when parsing cannot tell (an ``if`` or ``try``
    at top level may bind anything)."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (SyntaxError, OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"job.task.fn: {path} does not parse: {err}") from None
    names: set[str] = set()
    unsure = False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            unsure |= any(a.name == "*" for a in node.names)
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            unsure = True
    if name in names:
        return True
    return None if unsure else False


@contextlib.contextmanager
def _cwd_on_path() -> Iterator[None]:
    """Look modules up as a worker would: the working directory first (Ray starts workers in
    the driver's working directory; the ``sweeper`` script's own directory is not it)."""
    import sys

    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(cwd)


@register("policy_paths", "workers")
def _policy_paths(recipe: Recipe, where: Where) -> None:
    """A local policy path exists and is a model directory (``config.json``)."""
    seen = set()
    for job in _rlvr_jobs(recipe):
        name = job.policy.name
        if name == "tiny" or name in seen:
            continue
        seen.add(name)
        path = Path(name).expanduser()
        looks_local = name.startswith((".", "/", "~")) or path.exists()
        if not looks_local:
            continue  # a hub name: resolved by the workers (HF cache, HF_HUB_OFFLINE)
        if not path.exists():
            raise InputError(f"job.policy.name: path not found: {name}")
        if not path.is_dir() or not (path / "config.json").is_file():
            raise InputError(
                f"job.policy.name: {name} is not a model directory (no config.json); give a "
                "directory saved by save_pretrained, or a hub name"
            )


# --------------------------------------------------------------------------- the machine


@register("resources", "workers")
def _resources(recipe: Recipe, where: Where) -> None:
    """One job's resources fit the embedded local Ray (CPUs, GPUs; it has no custom ones)."""
    need = resolve_resources(recipe, where.cluster)
    source = "run.resources" if recipe.run.resources is not None else "the cluster file's resources"
    if need.custom:
        raise InputError(
            f"{source}.custom: {', '.join(sorted(need.custom))}: the embedded local Ray has no "
            "custom resources; run on a cluster whose nodes declare them (--cluster FILE)"
        )
    cluster = where.cluster
    cpus = float(cluster.num_cpus) if cluster and cluster.num_cpus else _machine_cpus()
    gpus = cluster.num_gpus if cluster is not None else _machine_gpus()
    if need.num_cpus > cpus + 1e-9:
        raise InputError(
            f"{source}.num_cpus: one job needs {_count(need.num_cpus, 'CPU')}, the embedded "
            f"local Ray has {_count(cpus, 'CPU')}"
        )
    if need.num_gpus > gpus + 1e-9:
        given = " (the cluster file's num_gpus)" if cluster is not None else ""
        raise InputError(
            f"{source}.num_gpus: one job needs {_count(need.num_gpus, 'GPU')}, the embedded "
            f"local Ray has {_count(gpus, 'GPU')}{given}; run on a cluster with GPUs "
            "(--cluster FILE)"
        )


def _count(n: float, what: str) -> str:
    return f"{n:g} {what}{'' if n == 1 else 's'}"


def _machine_cpus() -> float:
    """CPUs the embedded Ray will see (Ray's own count: cgroup limits included)."""
    try:
        from ray._private.utils import get_num_cpus

        return float(get_num_cpus())
    except Exception:  # Ray moved it: the OS count is what Ray falls back to
        return float(os.cpu_count() or 1)


def _machine_gpus() -> float:
    """GPUs the embedded Ray will detect (``CUDA_VISIBLE_DEVICES`` honoured)."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        if manager is None:
            return 0.0
        visible = manager.get_current_process_visible_accelerator_ids()
        count = manager.get_current_node_num_accelerators()
        return float(min(count, len(visible)) if visible is not None else count)
    except Exception:
        return 0.0


@register("ray_temp_dir", "workers")
def _ray_temp_dir(recipe: Recipe, where: Where) -> None:
    """The local cluster file's ``temp_dir`` is a directory, or can be made one."""
    if where.cluster is not None and where.cluster.temp_dir:
        creatable(Path(where.cluster.temp_dir).expanduser(), "temp_dir", directory=True)


def creatable(path: Path, what: str, directory: bool = False) -> None:
    """``InputError`` naming ``what`` unless ``path`` exists as what it should be (a directory
    or a file) or can be created: its nearest existing ancestor is a directory this process can
    write in."""
    path = Path(os.path.abspath(path))
    if path.exists():
        if directory and not path.is_dir():
            raise InputError(f"{what}: {path} exists and is not a directory")
        if not directory and path.is_dir():
            raise InputError(f"{what}: {path} is a directory, not a file")
        target = path if directory else path.parent
    else:
        target = path.parent
        while not target.exists():
            target = target.parent
        if not target.is_dir():
            raise InputError(f"{what}: {target} is a file, so {path} cannot be created")
    _probe_writable(target, what, path)


def _probe_writable(directory: Path, what: str, path: Path) -> None:
    """Create and remove a scratch directory in ``directory`` (permissions and read-only file
    systems both show; ``os.access`` misses the second, and everything as root)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sweeper-probe-", dir=directory))
    except OSError as err:
        raise InputError(
            f"{what}: cannot write in {directory} ({err.strerror or err}), so {path} cannot "
            "be created"
        ) from None


# --------------------------------------------------------------------------- storage


@register("storage", "anywhere")
def _storage(recipe: Recipe, where: Where) -> None:
    """The sweep dir can be created: not there yet (or empty), under a writable directory."""
    if where.storage is None:
        return
    root = where.storage
    sweep = f"{root.rstrip('/')}/{recipe.name}"
    if "://" in root:
        store = SweepStore(sweep)
        try:
            nonempty = store._nonempty()
        except OSError as err:
            raise InputError(f"storage {root}: cannot be reached ({err})") from None
        if nonempty:
            raise _exists(store.uri)
        return
    path = Path(sweep)
    if path.exists() and not path.is_dir():
        raise InputError(f"storage {root}: {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise _exists(str(path))
    target = path if path.is_dir() else path.parent
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        raise InputError(f"storage {root}: {target} is a file, not a directory")
    _probe_writable(target, f"storage {root}", path)


def _exists(uri: str) -> InputError:
    return InputError(
        f"{uri}: sweep directory exists and is not empty (pick another name with "
        "--set name=..., or use `sweeper resume`)"
    )


# --------------------------------------------------------------------------- the cluster


@register("cluster_address", "anywhere")
def _cluster_address(recipe: Recipe, where: Where) -> None:
    """The cluster address has the form the command needs and accepts a TCP connection within
    :data:`ADDRESS_TIMEOUT` seconds."""
    address = where.address
    if address is None or address == "auto":
        return
    kind = address_kind(address)
    if kind == "jobs" and where.command == "run":
        raise InputError(
            f"--address {address}: `sweeper run` drives the cluster from here through "
            "ray://HEAD:10001 or the GCS address HEAD:6379; the Jobs API address is for "
            "`sweeper submit`"
        )
    if where.command == "validate":
        return  # validate names no cluster to talk to
    host, port = host_port(address)
    if where.submits and kind != "jobs":
        port = JOBS_API_PORT  # submit talks to the Jobs API of that head (sweeper.submit)
    check_reachable(host, port, address)
    if where.submits:
        check_http_answers(jobs_api_url(address), address)


def jobs_api_url(address: str) -> str:
    """The Jobs API URL of a cluster address (as ``sweeper.submit.dashboard_url`` forms it)."""
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    host, _ = host_port(address)
    return f"http://{host}:{JOBS_API_PORT}"


def check_http_answers(url: str, address: str, timeout: float = ADDRESS_TIMEOUT) -> None:
    """``InputError`` unless an HTTP server answers at ``url`` within ``timeout`` s (any status:
    a 401 without a token still answers). Ray's Jobs client would wait forever on a server that
    accepts and never replies."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=timeout):
            return
    except urllib.error.HTTPError:
        return  # it answered
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise InputError(
            f"cannot reach the Ray Jobs API at {url} (from {address}): {reason}; is the "
            "dashboard running?"
        ) from None


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of a ``ray://``, ``http(s)://`` or ``host:port`` address."""
    if address.startswith(("http://", "https://")):
        parsed = urlparse(address)
        default = 443 if parsed.scheme == "https" else 80
        return parsed.hostname or "", parsed.port or default
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host.strip("[]"), int(port)


def check_reachable(host: str, port: int, address: str, timeout: float = ADDRESS_TIMEOUT) -> None:
    """``InputError`` unless ``host:port`` accepts a TCP connection within ``timeout`` s."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except socket.gaierror:
        reason = f"unknown host {host!r}"
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except OSError as err:
        reason = err.strerror or str(err)
    raise InputError(f"cannot reach the Ray cluster at {address}: {reason}; is it running?")
