"""trials.parquet and runs.parquet kept current by a log of changed rows, at a cost per change
that does not grow with the sweep.

A controller records each state change as a small *record* (the changed row, as JSON) in a log
of Parquet segments under ``tables/`` in the sweep dir, and now and then *folds* the log into the
base table (trials.parquet, runs.parquet)::

    trials.parquet                      base table; metadata sweeper.log_seq = last record folded
    tables/trials-000000000257.parquet  a log segment: records 257.. (seq int64, row JSON string)
    runs.parquet, tables/runs-*.parquet the same for job attempts

Writing (:class:`TableLog`, one writer per sweep dir: its controller). Records are numbered
1, 2, ... per table. The *open* segment, named by its first record's number, is rewritten
whole (atomically) with each change until it holds :data:`SEGMENT_RECORDS` records; it is then
sealed and the next change opens a new one: a change costs at most one small file write. When the
records since the last fold exceed :data:`FOLD_FRACTION` of the base table's rows (and at least
:data:`FOLD_MIN_RECORDS`), the log is folded: base + log are combined, written as the new base
with ``sweeper.log_seq`` = the last record's number, and the segments are deleted -- a cost
proportional to the table, paid once per that many changes (amortised constant). The controller
also folds when it ends, so the base tables are complete then; in between they may lag the log.

Reading (:func:`read_table`): the base plus every record numbered above its ``sweeper.log_seq``;
the latest record per key wins (``trial``; ``trial, seed, attempt``), rows sorted by key, with the
same columns and types as a base written whole from the same rows (the parameter-column typing
rule of :mod:`sweeper.store` applies to the combined rows). Plain ``pandas.read_parquet`` of the
base table still works; it may just be behind.

Crash safety: :meth:`TableLog.append` returns once the record is in a segment on disk (atomic
write), so a change is durable before the caller goes on. A SIGKILL during a fold leaves either
the old base and every segment (nothing folded yet) or the new base and some of the segments (the
new base covers them: readers skip records at or below its ``log_seq``); no row is lost or goes
back. Segments left over are deleted by the next fold, which a new writer does on its first use
(``sweeper resume``). A reader that lists the segments, then reads the base, then the segments
sees a consistent prefix of the log even while a fold runs (a segment deleted under it makes it
read again).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sweeper.encoding import json_default
from sweeper.errors import InputError

if TYPE_CHECKING:
    from sweeper.store import SweepTables

LOG_DIR = "tables"
"""The directory of the log segments in a sweep dir."""

SEGMENT_RECORDS = 128
"""Records per log segment: the open segment is rewritten per change until it holds this many."""

FOLD_FRACTION = 0.25
"""Fold when the records since the last fold exceed this fraction of the base table's rows..."""

FOLD_MIN_RECORDS = 512
"""... and this many (a small table is folded rarely, not at every change)."""

LOG_SEQ_KEY = b"sweeper.log_seq"
"""Base-table metadata: the number of the last log record folded into it."""

PARAM_KEYS_KEY = b"sweeper.param_keys"
"""Segment metadata: the searched parameters (JSON list) of the rows it holds."""

_SEGMENT = re.compile(r"^([a-z]+)-(\d{12})\.parquet$")
_SEGMENT_SCHEMA = pa.schema([("seq", pa.int64()), ("row", pa.string())])
_READ_TRIES = 5


@dataclass(frozen=True)
class TableSpec:
    """One table kept by a log: its base file, its key and how rows become an Arrow table."""

    name: str
    """Segment name prefix (``trials``, ``runs``)."""
    base: str
    """The base table's file in the sweep dir."""
    keys: tuple[str, ...]
    """The columns that identify a row; the latest record per key wins."""
    build: Callable[[list[dict[str, Any]], list[str]], pa.Table]
    """Rows (dicts) and the searched parameters -> the table, typed as written whole."""
    params_of: Callable[[pa.Schema], list[str]]
    """The searched parameters of a base table written by ``build``."""


@dataclass
class LogStats:
    """What one writer's table log has done (for benchmarks: work per change)."""

    changes: int = 0
    """``append`` calls."""
    records: int = 0
    """Rows recorded."""
    segment_bytes: int = 0
    """Bytes written to log segments."""
    folds: int = 0
    fold_rows: int = 0
    """Rows written to base tables by folds (and whole writes)."""
    fold_bytes: int = 0
    seconds: float = 0.0
    """Time spent in ``append``, folds included."""

    def as_dict(self) -> dict[str, float]:
        """The figures as a plain dict."""
        return dict(self.__dict__)


# --------------------------------------------------------------------------- reading


@dataclass
class LogState:
    """What is on disk for one table: the combined table and the log around it."""

    table: pa.Table | None
    """Base + log (None when neither exists)."""
    last_seq: int = 0
    """The highest record number on disk (folded or not)."""
    segments: list[str] = field(default_factory=list)
    """The segment files listed."""
    log_records: int = 0
    """Records above the base's ``log_seq``."""


def segment_name(spec: TableSpec, first_seq: int) -> str:
    """The file (relative to the sweep dir) of the segment whose first record is ``first_seq``."""
    return f"{LOG_DIR}/{spec.name}-{first_seq:012d}.parquet"


def list_segments(store: SweepTables, spec: TableSpec) -> list[tuple[int, str]]:
    """(first record number, file) of this table's segments, in order."""
    out = []
    for name in store._listdir(LOG_DIR):
        m = _SEGMENT.match(name)
        if m and m.group(1) == spec.name:
            out.append((int(m.group(2)), f"{LOG_DIR}/{name}"))
    return sorted(out)


def read_table(store: SweepTables, spec: TableSpec) -> pa.Table | None:
    """The table as base + log (see the module docstring); None when neither exists."""
    return read_state(store, spec).table


def read_state(store: SweepTables, spec: TableSpec) -> LogState:
    """The table and its log as on disk now (a segment deleted by a concurrent fold: read again)."""
    for _ in range(_READ_TRIES - 1):
        state = _read_once(store, spec)
        if state is not None:
            return state
        time.sleep(0.05)
    state = _read_once(store, spec, strict=True)
    assert state is not None
    return state


def _read_once(store: SweepTables, spec: TableSpec, strict: bool = False) -> LogState | None:
    segments = list_segments(store, spec)  # before the base: see the module docstring
    base = store._read_table(spec.base)
    base_seq = _base_seq(base)
    last_seq = base_seq
    params = spec.params_of(base.schema) if base is not None else []
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    n_records = 0
    for i, (_, rel) in enumerate(segments):
        following = segments[i + 1][0] if i + 1 < len(segments) else None
        if following is not None and following - 1 <= base_seq:
            continue  # folded already (left by a fold that was killed)
        seg = _read_segment(store, rel)
        if seg is None:
            if strict:
                continue
            return None  # deleted by a fold since the listing
        meta = seg.schema.metadata or {}
        for key in json.loads(meta.get(PARAM_KEYS_KEY, b"[]")):
            if key not in params:
                params.append(key)
        seqs = seg.column("seq").to_pylist()
        for seq, text in zip(seqs, seg.column("row").to_pylist(), strict=True):
            last_seq = max(last_seq, seq)
            if seq <= base_seq:
                continue
            row = json.loads(text)
            latest[tuple(row[k] for k in spec.keys)] = row
            n_records += 1
    paths = [rel for _, rel in segments]
    if not latest:
        return LogState(base, last_seq, paths, 0)
    return LogState(_combine(spec, base, latest, params), last_seq, paths, n_records)


def _read_segment(store: SweepTables, rel: str) -> pa.Table | None:
    try:
        return store._read_table(rel)
    except InputError:
        if store.exists(rel):
            raise
        return None  # vanished between the existence check and the read (object stores)


def _base_seq(base: pa.Table | None) -> int:
    if base is None:
        return 0
    return int((base.schema.metadata or {}).get(LOG_SEQ_KEY, b"0"))


def _combine(
    spec: TableSpec,
    base: pa.Table | None,
    latest: dict[tuple[Any, ...], dict[str, Any]],
    params: list[str],
) -> pa.Table:
    """Base rows not superseded, plus the latest records, typed as one table and sorted by key."""
    logged = spec.build(list(latest.values()), params)
    if base is None:
        return _sorted(logged, spec.keys)
    base = base.replace_schema_metadata(None)
    keys = zip(*(base.column(k).to_pylist() for k in spec.keys), strict=True)
    keep = pa.array([k not in latest for k in keys], type=pa.bool_())
    kept = base.filter(keep)
    combined = _concat(kept, logged)
    if combined is None:  # a column's type changes with the new rows (int -> float, ...)
        combined = spec.build(kept.to_pylist() + list(latest.values()), params)
    return _sorted(combined, spec.keys)


def _concat(a: pa.Table, b: pa.Table) -> pa.Table | None:
    """``a`` then ``b`` when the typing rule over both gives each column the type it has on
    each side -- the same type, or a side where the column is all null (its values decide
    nothing) -- else None (type the rows together)."""
    if a.schema.names != b.schema.names:
        return None
    left, right = [], []
    for name in a.schema.names:
        x, y = a.column(name), b.column(name)
        if x.type != y.type:
            if x.null_count == len(x):
                x = pa.chunked_array([pa.nulls(len(x), type=y.type)])
            elif y.null_count == len(y):
                y = pa.chunked_array([pa.nulls(len(y), type=x.type)])
            else:
                return None
        left.append(x)
        right.append(y)
    names = a.schema.names
    return pa.concat_tables([pa.table(left, names=names), pa.table(right, names=names)])


def _sorted(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


# --------------------------------------------------------------------------- writing


def _encode(row: dict[str, Any]) -> str:
    # NaN and inf are kept (Python's JSON extension): eps_high may be inf, a value may be NaN.
    return json.dumps(row, default=json_default, separators=(",", ":"))


class TableLog:
    """The writer of one table's log (one per table and controller; see the module docstring).

    On first use it folds whatever a previous writer left, so it starts from an empty log.
    """

    def __init__(self, store: SweepTables, spec: TableSpec) -> None:
        self.store = store
        self.spec = spec
        self.stats = LogStats()
        self._ready = False
        self._seq = 0  # the last record number written or folded
        self._open_first = 0  # first record number of the open segment (0: none open)
        self._open: list[tuple[int, str]] = []
        self._param_keys: list[str] = []
        self._since_fold = 0
        self._base_rows = 0

    def append(self, rows: list[dict[str, Any]], param_keys: Sequence[str] = ()) -> None:
        """Record changed ``rows`` (durable on return); folds when the log has grown enough."""
        if not rows:
            return
        start = time.perf_counter()
        self._start()
        for key in param_keys:
            if key not in self._param_keys:
                self._param_keys.append(key)
        for row in rows:
            missing = [k for k in self.spec.keys if row.get(k) is None]
            if missing:
                raise ValueError(f"a {self.spec.name} row needs {missing}")
        records = [(self._seq + i + 1, _encode(r)) for i, r in enumerate(rows)]
        first, segment = self._open_first, list(self._open)
        while records:
            if not first or len(segment) >= SEGMENT_RECORDS:
                first, segment = records[0][0], []  # the open one is sealed; open the next
            room = SEGMENT_RECORDS - len(segment)
            segment.extend(records[:room])
            records = records[room:]
            self._write_segment(first, segment)
            # Committed only once on disk: a failed write leaves the log as it was.
            self._open_first, self._open, self._seq = first, list(segment), segment[-1][0]
        self._since_fold += len(rows)
        self.stats.changes += 1
        self.stats.records += len(rows)
        if self._since_fold > max(FOLD_MIN_RECORDS, FOLD_FRACTION * self._base_rows):
            self.fold()
        self.stats.seconds += time.perf_counter() - start

    def fold(self) -> None:
        """Fold the log into the base table now (nothing to do when the log is empty)."""
        state = read_state(self.store, self.spec)
        self._seq = max(self._seq, state.last_seq)
        if state.log_records and state.table is not None:
            self._write_base(state.table)
        for rel in state.segments:  # all at or below the new base's log_seq
            self.store.remove(rel)
        if not self._ready:  # a writer's first fold: what a killed one left half-written
            self.store.remove_temp_files(LOG_DIR)
            self.store.remove_temp_files("", self.spec.base)
        self._log_emptied(state.table.num_rows if state.table is not None else self._base_rows)

    def replace(self, table: pa.Table) -> None:
        """Write the whole table (every row) as the base; the log is emptied."""
        state = read_state(self.store, self.spec)
        self._seq = max(self._seq, state.last_seq)
        self._write_base(table)
        for rel in state.segments:
            self.store.remove(rel)
        self._log_emptied(table.num_rows)

    def _log_emptied(self, base_rows: int) -> None:
        """The log is empty now (folded into, or replaced by, a base of ``base_rows`` rows)."""
        self._ready = True
        self._open_first, self._open = 0, []
        self._since_fold = 0
        self._base_rows = base_rows

    def _start(self) -> None:
        if not self._ready:
            self.fold()

    def _write_segment(self, first: int, records: list[tuple[int, str]]) -> None:
        seqs, texts = zip(*records, strict=True)
        table = pa.table({"seq": list(seqs), "row": list(texts)}, schema=_SEGMENT_SCHEMA)
        meta = {PARAM_KEYS_KEY: json.dumps(self._param_keys).encode()}
        table = table.replace_schema_metadata(meta)
        self.stats.segment_bytes += self.store._write_table(segment_name(self.spec, first), table)

    def _write_base(self, table: pa.Table) -> None:
        meta = dict(table.schema.metadata or {})
        meta[LOG_SEQ_KEY] = str(self._seq).encode()
        self.stats.fold_bytes += self.store._write_table(
            self.spec.base, table.replace_schema_metadata(meta)
        )
        self.stats.folds += 1
        self.stats.fold_rows += table.num_rows
