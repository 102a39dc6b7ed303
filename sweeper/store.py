"""The sweep directory: layout, Parquet schemas, atomic writes and readers (DESIGN §5).

A sweep lives in ``<storage>/<name>/``, a local path or a ``pyarrow.fs`` URI (``file://``,
``s3://``, ...). Everything a read command needs is in it::

    recipe.yaml             the recipe as submitted (text, unversioned)
    recipe.resolved.json    the validated recipe, ``Recipe.model_dump(mode="json")``
    manifest.json           versions, git sha, host, created_at
    trials.parquet          one row per trial (folded from tables/, see :mod:`sweeper.tables`)
    runs.parquet            one row per job attempt (likewise)
    tables/                 the log of changed trial and run rows not yet folded
    traces/                 step rows: parts of running attempts, one file per ended attempt,
                            segments of merged attempts (sweeper.traces)
    samples/                eval completions, one Parquet file per eval step (eval.log_samples)
    status.json             live counts, running jobs, best so far, updated_at
    optuna.db               the local Optuna sqlite storage (written by the controller)

Crash safety: no reader ever sees a half-written file (every write is atomic, see
:mod:`sweeper.storage`); readers ignore names starting with ``.`` or ``_``.

Every Parquet file carries the key-value metadata ``sweeper.schema_version`` (``"1"``) and every
JSON file a top-level ``schema_version`` (``1``). JSON files use Python's ``Infinity``/``NaN``
extension for non-finite floats (``eps_high: inf`` must survive), which ``json.loads`` and pandas
read back.

Column conventions (plain pandas/pyarrow can read everything):

- trials.parquet: ``trial`` int64, ``state`` string (Optuna's names: COMPLETE, PRUNED, FAIL,
  RUNNING, WAITING), one column per searched parameter named by its dotted key, ``value``
  float64 (NaN if none), ``seeds`` list<int64>, ``started_at``/``ended_at`` timestamp[us, UTC],
  ``error`` string. A parameter column is int64 when every value is an int, float64 when every
  value is numeric (``inf`` kept), bool when every value is a bool, and otherwise **string**: a
  choice mixing types (``[0.2, "auto"]``) stores each value as text (``"0.2"``, ``"auto"``,
  ``"true"``, ``"inf"``; None stays null) -- :func:`decode_param` turns it back.
- runs.parquet: ``trial``, ``seed``, ``attempt`` int64, ``state``, ``worker``, ``node`` string,
  ``started_at``, ``ended_at`` timestamp, ``error`` string.
- traces/: ``trial``, ``seed``, ``attempt``, ``step`` int64, then one float64 column per metric
  (NaN where not measured at that step). A running attempt's parts are named
  ``t000003-s0-a1-p00002.parquet``, an ended attempt's file ``t000003-s0-a1.parquet``, merged
  attempts ``seg1-000007.parquet`` (:mod:`sweeper.traces`: layout, compaction, the reading
  rule); files of one sweep may differ in their metric columns.
- samples/: ``trial``, ``seed``, ``attempt``, ``step``, ``sample`` int64, ``prompt``,
  ``response`` string, ``reward`` float64, ``correct`` bool; one file per (trial, seed, attempt,
  eval step), named ``t000003-s0-a1-step000010.parquet``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweeper import traces
from sweeper.encoding import column, is_number, json_default
from sweeper.errors import InputError
from sweeper.storage import StorageDir
from sweeper.tables import TableLog, TableSpec, list_segments, read_table

SCHEMA_VERSION = 1
"""Version of every file this module writes (Parquet metadata ``sweeper.schema_version``)."""

SCHEMA_KEY = b"sweeper.schema_version"

RECIPE_YAML = "recipe.yaml"
RESOLVED_JSON = "recipe.resolved.json"
MANIFEST_JSON = "manifest.json"
TRIALS_PARQUET = "trials.parquet"
RUNS_PARQUET = "runs.parquet"
TRACES_DIR = traces.TRACES_DIR
SAMPLES_DIR = "samples"
STATUS_JSON = "status.json"
OPTUNA_DB = "optuna.db"

TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
"""Optuna's trial state names, the values of ``state`` in trials.parquet and runs.parquet."""

TRIAL_COLUMNS = ("trial", "state", "value", "seeds", "started_at", "ended_at", "error")
RUN_COLUMNS = (
    "trial", "seed", "attempt", "state", "worker", "node", "started_at", "ended_at", "error",
)  # fmt: skip
TRACE_KEYS = traces.TRACE_KEYS
SAMPLE_COLUMNS = (*TRACE_KEYS, "sample", "prompt", "response", "reward", "correct")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SAMPLES = re.compile(r"^t(\d+)-s(-?\d+)-a(\d+)-step(\d+)\.parquet$")
_SAMPLE_SCHEMA = pa.schema(
    [(k, pa.int64()) for k in (*TRACE_KEYS, "sample")]
    + [("prompt", pa.string()), ("response", pa.string())]
    + [("reward", pa.float64()), ("correct", pa.bool_())]
)
_TS = pa.timestamp("us", tz="UTC")


# --------------------------------------------------------------------------- small helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, default=json_default) + "\n").encode()


def _to_timestamp(value: Any) -> dt.datetime | None:
    """None, a datetime, an ISO string or epoch seconds -> an aware UTC datetime."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _param_array(values: list[Any]) -> pa.Array:
    """One searched parameter's column (see the module docstring for the typing rule)."""
    present = [v for v in values if v is not None]
    if not present:
        return pa.array([None] * len(values), type=pa.float64())
    if all(isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.bool_())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.array(values, type=pa.int64())
    if all(is_number(v) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    return pa.array([None if v is None else _param_text(v) for v in values], type=pa.string())


def _param_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # 'inf', '0.28'
    return str(v)


def decode_param(value: Any) -> Any:
    """Turn a value read from a parameter column back into a Python scalar.

    Numbers and bools pass through (numpy scalars become Python ones, NaN in an otherwise
    numeric column becomes None); text from a mixed-type column is decoded: ``"true"``/``"false"``
    -> bool, ``"null"``/``"None"`` -> None, integer and float literals (``"inf"``) -> numbers,
    anything else stays a string.
    """
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if not isinstance(value, str):
        return value
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "none"):
        return None
    for cast in (int, float):
        with contextlib.suppress(ValueError):
            return cast(value)
    return value


def _with_version(table: pa.Table) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[SCHEMA_KEY] = str(SCHEMA_VERSION).encode()
    return table.replace_schema_metadata(meta)


def _parquet_bytes(table: pa.Table) -> bytes:
    # Serialise fully in memory first: the file system then sees one complete write, and an
    # error while encoding cannot leave anything behind.
    sink = pa.BufferOutputStream()
    pq.write_table(_with_version(table), sink)
    return sink.getvalue().to_pybytes()


def validate_sweep_name(name: str) -> str:
    """A sweep name is one path component: letters, digits, ``_ . -``, not starting with ``.``;
    so it can never escape the storage root."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InputError(
            f"sweep name {name!r} is invalid: use 1-100 letters, digits, '_', '.', '-', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return name


# --------------------------------------------------------------------------- the store


class SweepTables(StorageDir):
    """Parquet files of a sweep dir, and its trial and run tables (base + log, see
    :mod:`sweeper.tables`): the table part of :class:`SweepStore`."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self._logs: dict[str, TableLog] = {}

    # ---------------------------------------------------------------- Parquet

    def _write_table(self, rel: str, table: pa.Table) -> int:
        data = _parquet_bytes(table)
        self.write_bytes(rel, data)
        return len(data)

    def _read_table(self, rel: str) -> pa.Table | None:
        if not self.exists(rel):
            return None
        try:
            if self._fs is None:
                return pq.read_table(self._p(rel))
            return pq.read_table(self._p(rel), filesystem=self._fs)
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError) as err:  # truncated, zero bytes, not Parquet
            raise damaged(self, rel, err) from None

    # ---------------------------------------------------------------- trials and runs tables

    def _table_log(self, spec: TableSpec) -> TableLog:
        if spec.name not in self._logs:
            self._logs[spec.name] = TableLog(self, spec)
        return self._logs[spec.name]

    def write_trials(self, rows: list[dict[str, Any]], param_keys: list[str]) -> None:
        """Rewrite trials.parquet atomically from one dict per trial (every trial; the table
        log is emptied).

        Keys: ``trial``, ``state``, each dotted ``param_keys`` entry, ``value``, ``seeds``
        (list of ints), ``started_at``/``ended_at`` (datetime, ISO string or epoch seconds),
        ``error``; other keys become extra columns.
        """
        self._table_log(_TRIALS).replace(_trials_table(rows, param_keys))

    def write_runs(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite runs.parquet atomically from one dict per job attempt (trial, seed, attempt,
        state, worker, node, started_at, ended_at, error; other keys become extra columns)."""
        self._table_log(_RUNS).replace(_runs_table(rows))

    def append_trials(self, rows: list[dict[str, Any]], param_keys: list[str]) -> None:
        """Record changed trial rows (keys as :meth:`write_trials`) in the table log, durably,
        at a cost independent of the table's size; a later record of a trial replaces its row."""
        self._table_log(_TRIALS).append(rows, param_keys)

    def append_runs(self, rows: list[dict[str, Any]]) -> None:
        """Record changed attempt rows (keys as :meth:`write_runs`) in the table log; a later
        record of a (trial, seed, attempt) replaces its row."""
        self._table_log(_RUNS).append(rows)

    def fold_tables(self) -> None:
        """Fold the table log into trials.parquet and runs.parquet now (they are then
        complete for plain Parquet readers)."""
        for spec in (_TRIALS, _RUNS):
            self._table_log(spec).fold()

    def table_stats(self) -> dict[str, dict[str, float]]:
        """What this store's table log wrote, per table (changes, records, bytes, folds,
        seconds): the work per change, for benchmarks."""
        return {spec.name: self._table_log(spec).stats.as_dict() for spec in (_TRIALS, _RUNS)}

    def has_runs(self) -> bool:
        """Whether any job attempt was recorded (runs.parquet or its log)."""
        return self.exists(RUNS_PARQUET) or bool(list_segments(self, _RUNS))

    def tables_digest(self) -> str:
        """A digest that changes whenever the trial or run table does (base or log)."""
        digest = hashlib.sha1()
        for spec in (_TRIALS, _RUNS):
            segments = [rel for _, rel in list_segments(self, spec)]
            for rel in [spec.base, *segments[-1:]]:
                digest.update(rel.encode())
                if self.exists(rel):
                    with contextlib.suppress(FileNotFoundError):
                        digest.update(self.read_bytes(rel))
            digest.update(repr(segments).encode())
        return digest.hexdigest()

    def read_trials(self) -> pd.DataFrame:
        """trials.parquet with the table log applied (see :mod:`sweeper.tables`), as a
        DataFrame: rows by trial number (a table written whole and never logged to: as written);
        empty, with the fixed columns, if nothing was written yet."""
        table = read_table(self, _TRIALS)
        if table is None:
            return pd.DataFrame({c: pd.Series(dtype=_EMPTY_DTYPES[c]) for c in TRIAL_COLUMNS})
        return table.to_pandas()

    def read_runs(self) -> pd.DataFrame:
        """runs.parquet with the table log applied, as a DataFrame: rows by (trial, seed,
        attempt) (a table written whole: as written); empty, with the fixed columns, if nothing
        was written yet."""
        table = read_table(self, _RUNS)
        if table is None:
            return pd.DataFrame({c: pd.Series(dtype=_EMPTY_DTYPES[c]) for c in RUN_COLUMNS})
        return table.to_pandas()


class SweepStore(SweepTables):
    """One sweep directory, local or remote; all reads and writes of the sweep go through it.

    ``SweepStore(uri)`` binds to a location without checking it; use :meth:`create` for a new
    sweep and :meth:`open` for an existing one.
    """

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.name: str = self._root.rstrip("/").rsplit("/", 1)[-1]
        self._parts: dict[tuple[int, int, int], int] = {}

    # ---------------------------------------------------------------- construction

    def __repr__(self) -> str:
        return f"SweepStore({self.uri!r})"

    @classmethod
    def create(
        cls,
        storage: str,
        name: str,
        recipe_text: str,
        resolved: dict[str, Any],
        manifest: dict[str, Any],
        *,
        resume: bool = False,
    ) -> SweepStore:
        """Create ``<storage>/<name>/`` and write recipe.yaml, recipe.resolved.json and
        manifest.json.

        An existing non-empty directory is refused with :class:`InputError`, unless ``resume``
        is true and it is a sweep dir: then it is opened as is (its recipe is not rewritten).
        """
        validate_sweep_name(name)
        storage = str(storage)
        sep = "" if storage.endswith("/") else "/"
        store = cls(storage + sep + name)
        if store._nonempty():
            if resume and store.exists(RESOLVED_JSON):
                return store
            raise InputError(
                f"{store.uri}: sweep directory exists and is not empty "
                "(pick another name, or use `sweeper resume`)"
            )
        store._mkdir("")
        store._mkdir(TRACES_DIR)
        store.write_text(RECIPE_YAML, recipe_text)
        store.write_json(RESOLVED_JSON, resolved)
        store.write_json(MANIFEST_JSON, manifest)
        return store

    @classmethod
    def open(cls, sweep: str) -> SweepStore:
        """Open an existing sweep dir; :class:`InputError` if it is not one."""
        store = cls(sweep)
        if not store._isdir(""):
            raise InputError(f"{store.uri}: no such sweep directory")
        if not store.exists(RESOLVED_JSON):
            raise InputError(f"{store.uri}: not a sweep directory (no {RESOLVED_JSON})")
        return store

    # ---------------------------------------------------------------- paths

    def optuna_sqlite_path(self) -> str | None:
        """Local path of the Optuna sqlite file (``optuna.db``); None for non-local stores
        (use a SQLAlchemy URL there)."""
        return str(Path(self._root, OPTUNA_DB)) if self._fs is None else None

    # ---------------------------------------------------------------- JSON

    def write_json(self, name: str, obj: Any) -> str:
        """Atomically write ``obj`` as JSON; a dict gets ``schema_version`` added."""
        if isinstance(obj, dict):
            obj = {"schema_version": SCHEMA_VERSION, **obj}
        return self.write_bytes(name, _dumps(obj))

    def read_json(self, name: str) -> Any:
        """The parsed JSON file ``name`` (as written, ``schema_version`` included); None when
        the file does not exist. A file that is not valid JSON is an :class:`InputError` naming
        it and what to do."""
        try:
            data = self.read_bytes(name)
        except FileNotFoundError:
            return None
        except IsADirectoryError as err:
            raise damaged(self, name, err) from None
        try:
            return json.loads(data)
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            raise damaged(self, name, err) from None

    def write_status(self, status: dict[str, Any]) -> None:
        """Atomically write status.json (``updated_at`` added when missing)."""
        self.write_json(STATUS_JSON, {"updated_at": _now().isoformat(), **status})

    def read_status(self) -> dict[str, Any]:
        """status.json, or ``{}`` when no status was written yet."""
        if not self.exists(STATUS_JSON):
            return {}
        out = self.read_json(STATUS_JSON)
        problem = _status_problem(out)
        if problem:
            raise damaged(self, STATUS_JSON, problem)
        return out

    def read_recipe_text(self) -> str:
        """recipe.yaml as submitted."""
        return self.read_text(RECIPE_YAML)

    def read_resolved(self) -> dict[str, Any]:
        """The resolved recipe dict (``schema_version`` removed, so it validates as a Recipe)."""
        out: dict[str, Any] | None = self.read_json(RESOLVED_JSON)
        if out is None:
            raise InputError(f"{self.uri}: not a sweep directory (no {RESOLVED_JSON})")
        problem = _recipe_problem(out)  # every reader builds on it: named here, not in a trace
        if problem:
            raise damaged(self, RESOLVED_JSON, problem)
        out.pop("schema_version", None)
        return out

    def read_manifest(self) -> dict[str, Any]:
        """manifest.json (``{}`` if absent)."""
        if not self.exists(MANIFEST_JSON):
            return {}
        out: dict[str, Any] = self.read_json(MANIFEST_JSON)
        return out

    # ---------------------------------------------------------------- traces
    # Naming, compaction and the reading rule live in sweeper.traces; these are the store's
    # entry points (the controller's writer drives sweeper.traces.TraceCompactor directly).

    def damaged(self, rel: str, err: BaseException | str) -> InputError:
        """The one-line error for the damaged file ``rel`` (:func:`damaged`)."""
        return damaged(self, rel, err)

    def open_input(self, rel: str) -> pa.NativeFile:
        """``rel`` opened for random-access reading (close it after); FileNotFoundError when
        absent."""
        if self._fs is None:
            return pa.OSFile(self._p(rel), "rb")
        try:
            return self._fs.open_input_file(self._p(rel))
        except OSError as err:
            if not self.exists(rel):
                raise FileNotFoundError(self.path(rel)) from err
            raise

    def next_part(self, key: tuple[int, int, int]) -> int:
        """The next part number of attempt ``key``: counted in this process, continuing after
        the largest part on disk the first time (a resumed process)."""
        if key not in self._parts:
            parts = traces.list_traces(self).parts.get(key, [])
            self._parts[key] = max((p for p, _ in parts), default=-1) + 1
        part = self._parts[key]
        self._parts[key] = part + 1
        return part

    def append_trace(
        self, trial: int, seed: int, attempt: int, rows: list[dict[str, Any]]
    ) -> str | None:
        """Write the step ``rows`` of one job attempt as ONE new Parquet part file in traces/
        (``t000003-s0-a1-p00002.parquet``); returns its name (None for empty ``rows``: nothing
        is written).

        Each row has ``step`` (int) and float metrics (NaN or None where not measured). The part
        appears atomically. (A running controller's writer compacts an ended attempt's parts
        into one file: :class:`sweeper.traces.TraceCompactor`.)
        """
        if not rows:
            return None
        table = traces.trace_table(trial, seed, attempt, rows)
        key = (int(trial), int(seed), int(attempt))
        return traces.TraceCompactor(self).write_part(key, self.next_part(key), table)

    def trace_files(self) -> list[str]:
        """Visible Parquet file names in traces/ (parts, attempt files, segments), in reading
        order (:func:`sweeper.traces.file_order`)."""
        return sorted(traces.list_traces(self).names, key=traces.file_order)

    def read_traces(
        self, completed_only: bool = True, columns: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """All step rows as one DataFrame sorted by (trial, seed, attempt, step), each key once.

        Files with different metric columns are unified (missing values NaN). With
        ``completed_only`` only rows of attempts whose runs.parquet state is COMPLETE are kept
        (none when runs.parquet is absent). ``columns``: read only the keys and these metric
        columns (those present), e.g. what a ranking needs. Each attempt's rows come from one
        file kind (:mod:`sweeper.traces`); a repeated step of a running attempt's parts keeps
        the last written.
        """
        keep = None
        if completed_only:
            runs = self.read_runs()
            done = runs.loc[runs["state"] == "COMPLETE", ["trial", "seed", "attempt"]]
            done_keys = set(done.astype("int64").itertuples(index=False, name=None))
            keep = done_keys.__contains__
        table = traces.read_traces(self, columns, keep)
        return table.to_pandas(split_blocks=True, self_destruct=True)  # no second copy

    # ---------------------------------------------------------------- eval samples

    def append_samples(
        self, trial: int, seed: int, attempt: int, step: int, samples: list[dict[str, Any]]
    ) -> None:
        """Write the logged eval ``samples`` of one eval step of one job attempt as ONE Parquet
        file in samples/ (atomically, like the traces). Each sample has ``prompt``, ``response``
        (text), ``reward`` (float), ``correct`` (bool) and optionally ``sample`` (its index;
        default its position). An empty list writes nothing."""
        if not samples:
            return
        name = f"t{int(trial):06d}-s{int(seed)}-a{int(attempt)}-step{int(step):06d}.parquet"
        self._write_table(
            f"{SAMPLES_DIR}/{name}", _samples_table(trial, seed, attempt, step, samples)
        )

    def read_samples(self, trial: int | None = None, step: int | None = None) -> pd.DataFrame:
        """The logged eval samples (``SAMPLE_COLUMNS``), optionally of one trial and/or one step,
        sorted by (trial, seed, attempt, step, sample); empty (with the columns) when none. Every
        attempt is kept: a failed run's completions are what one reads after a collapse."""
        keep = [n for n in self._listdir(SAMPLES_DIR) if _sample_file_matches(n, trial, step)]
        if not keep:
            return _SAMPLE_SCHEMA.empty_table().to_pandas()
        tables = [self._read_table(f"{SAMPLES_DIR}/{name}") for name in keep]
        df = pa.concat_tables([t.cast(_SAMPLE_SCHEMA) for t in tables if t is not None]).to_pandas()
        return df.sort_values(list(SAMPLE_COLUMNS[:5]), kind="stable").reset_index(drop=True)


def _samples_table(
    trial: int, seed: int, attempt: int, step: int, samples: list[dict[str, Any]]
) -> pa.Table:
    n = len(samples)
    try:
        cols = {
            "trial": [int(trial)] * n,
            "seed": [int(seed)] * n,
            "attempt": [int(attempt)] * n,
            "step": [int(step)] * n,
            "sample": [int(s.get("sample", i)) for i, s in enumerate(samples)],
            "prompt": [str(s["prompt"]) for s in samples],
            "response": [str(s["response"]) for s in samples],
            "reward": [float(s["reward"]) for s in samples],
            "correct": [bool(s["correct"]) for s in samples],
        }
    except KeyError as err:
        raise ValueError(f"every sample needs {err.args[0]!r}") from None
    return pa.table(cols, schema=_SAMPLE_SCHEMA)


def _sample_file_matches(name: str, trial: int | None, step: int | None) -> bool:
    m = _SAMPLES.match(name)
    if m is None:
        return False
    return (trial is None or int(m.group(1)) == trial) and (step is None or int(m.group(4)) == step)


def damaged(store: StorageDir, rel: str, err: BaseException | str) -> InputError:
    """The one-line error for a damaged file of a sweep dir: which file, what is wrong with it,
    and what to do (the readers turn every unreadable file into this)."""
    reason = err if isinstance(err, str) else (str(err).strip() or type(err).__name__)
    reason = " ".join(reason.splitlines()[0].split())
    reason = re.sub(r"^Could not open Parquet input source '[^']*': ", "", reason)[:200]
    what = "JSON" if rel.endswith(".json") else "Parquet"
    return InputError(f"{store.path(rel)}: damaged {what} file ({reason}); {_repair(rel)}")


def _recipe_problem(resolved: Any) -> str | None:
    """What makes parsed recipe.resolved.json not a recipe, or None."""
    from pydantic import ValidationError

    from sweeper.config.messages import describe_validation_error
    from sweeper.config.recipe import Recipe

    if not isinstance(resolved, dict):
        return f"a JSON {type(resolved).__name__}, not a recipe"
    try:
        Recipe.model_validate({k: v for k, v in resolved.items() if k != "schema_version"})
    except ValidationError as err:
        return describe_validation_error(err)
    return None


def _repair(rel: str) -> str:
    """What to do about a damaged file ``rel`` of a sweep dir."""
    if rel.startswith(TRACES_DIR):
        return (
            "restore it from a copy, or move it out of traces/ to read the sweep without those rows"
        )
    if rel == STATUS_JSON:
        return "remove it: a running controller writes a new one (`sweeper resume` does too)"
    if rel == RESOLVED_JSON:
        return "restore it from a copy (recipe.yaml holds the recipe as submitted)"
    return "restore it from a copy of the sweep dir"


def _status_problem(status: Any) -> str | None:
    """What makes parsed status.json unusable, or None."""
    if not isinstance(status, dict):
        return f"a JSON {type(status).__name__}, not an object"
    for key, kind in (("counts", dict), ("jobs_running", list), ("objective", dict)):
        if key in status and not isinstance(status[key], kind):
            return f"{key!r} is not a JSON {'object' if kind is dict else 'array'}"
    numbers = [*(status.get("counts") or {}).values(), status.get("total_trials") or 0]
    if not all(isinstance(v, int) for v in numbers):
        return "'counts' or 'total_trials' holds a value that is not a whole number"
    for job in status.get("jobs_running") or []:
        if not isinstance(job, dict) or not {"trial", "seed", "attempt"} <= set(job):
            return "'jobs_running' holds an entry without trial, seed and attempt"
        if not all(isinstance(job.get(k, 0), int | None) for k in ("step", "steps")):
            return "'jobs_running' holds a step that is not a whole number"
    best = status.get("best")
    if best is not None and not (
        isinstance(best, dict)
        and {"trial", "value"} <= set(best)
        and isinstance(best.get("params", {}), dict)
    ):
        return "'best' is not an object with 'trial', 'value' and 'params'"
    return None


def _trials_table(rows: list[dict[str, Any]], param_keys: list[str]) -> pa.Table:
    clash = sorted(set(param_keys) & set(TRIAL_COLUMNS))
    if clash:
        raise ValueError(f"parameter keys {clash} collide with trials.parquet columns")
    cols: dict[str, pa.Array] = {
        "trial": pa.array([int(r["trial"]) for r in rows], type=pa.int64()),
        "state": pa.array([_state(r.get("state")) for r in rows], type=pa.string()),
    }
    for key in param_keys:
        cols[key] = _param_array([r.get(key) for r in rows])
    cols["value"] = pa.array([_float(r.get("value")) for r in rows], type=pa.float64())
    cols["seeds"] = pa.array(
        [None if r.get("seeds") is None else [int(s) for s in r["seeds"]] for r in rows],
        type=pa.list_(pa.int64()),
    )
    _time_and_error(cols, rows)
    _extras(cols, rows)
    return pa.table(cols)


def _runs_table(rows: list[dict[str, Any]]) -> pa.Table:
    cols: dict[str, pa.Array] = {
        k: pa.array([int(r[k]) for r in rows], type=pa.int64())
        for k in ("trial", "seed", "attempt")
    }
    cols["state"] = pa.array([_state(r.get("state")) for r in rows], type=pa.string())
    for k in ("worker", "node"):
        cols[k] = pa.array(
            [None if r.get(k) is None else str(r[k]) for r in rows], type=pa.string()
        )
    _time_and_error(cols, rows)
    _extras(cols, rows)
    return pa.table(cols)


def _trial_params(schema: pa.Schema) -> list[str]:
    """The parameter columns of a trials table: those between ``state`` and ``value``."""
    names = schema.names
    if "state" not in names or "value" not in names:
        return []
    return names[names.index("state") + 1 : names.index("value")]


_TRIALS = TableSpec("trials", TRIALS_PARQUET, ("trial",), _trials_table, _trial_params)
_RUNS = TableSpec(
    "runs", RUNS_PARQUET, ("trial", "seed", "attempt"), lambda rows, _: _runs_table(rows),
    lambda _: [],
)  # fmt: skip


_EMPTY_DTYPES = {
    "trial": "int64",
    "seed": "int64",
    "attempt": "int64",
    "state": "object",
    "worker": "object",
    "node": "object",
    "value": "float64",
    "seeds": "object",
    "started_at": "datetime64[us, UTC]",
    "ended_at": "datetime64[us, UTC]",
    "error": "object",
}


def _state(value: Any) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", value)  # accepts optuna.trial.TrialState members
    return str(name)


def _float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def _time_and_error(cols: dict[str, pa.Array], rows: list[dict[str, Any]]) -> None:
    for k in ("started_at", "ended_at"):
        cols[k] = pa.array([_to_timestamp(r.get(k)) for r in rows], type=_TS)
    cols["error"] = pa.array(
        [None if r.get("error") is None else str(r["error"]) for r in rows], type=pa.string()
    )


def _extras(cols: dict[str, pa.Array], rows: Iterable[dict[str, Any]]) -> None:
    rows = list(rows)
    extra: dict[str, None] = {}
    for r in rows:
        extra.update(dict.fromkeys(k for k in r if k not in cols))
    for k in extra:
        cols[k] = column([r.get(k) for r in rows])


# --------------------------------------------------------------------------- manifest


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_sha(where: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def manifest(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced a sweep: package versions (read from metadata, so torch is never
    imported), the git sha of sweeper's source checkout (None outside a git repo), host and
    creation time; ``extra`` is merged on top."""
    versions = {"python": platform.python_version()}
    for dist in ("sweeper", "ray", "optuna", "pyarrow", "pandas", "pydantic", "torch"):
        v = _version(dist)
        if v is not None:
            versions[dist] = v
    out: dict[str, Any] = {
        "versions": versions,
        "git_sha": _git_sha(Path(__file__).resolve().parent),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": list(sys.argv),
        "created_at": _now().isoformat(),
    }
    out.update(extra or {})
    return out
