"""traces/: naming, listing, compaction and reading of a sweep's step rows (DESIGN §5).

Every row is keyed by ``(trial, seed, attempt, step)``; one ``(trial, seed, attempt)`` is an
*attempt*. Three kinds of file hold the rows, all plain Parquet written atomically (a reader
never sees a half-written file, :mod:`sweeper.storage`)::

    t000003-s0-a1-p00002.parquet   a part: rows a running attempt streamed (every ~2 s)
    t000003-s0-a1.parquet          an attempt file: every row of one ended attempt
    seg1-000007.parquet            a segment: the rows of FANOUT attempt files (level 1) or of
                                   FANOUT level-1 segments (level 2), sorted by the keys; the
                                   attempts it holds are listed in its Parquet key-value
                                   metadata ``sweeper.attempts`` (JSON ``[[trial, seed, attempt],
                                   ...]``)

Life of an attempt's rows (:class:`TraceCompactor`, driven by the controller's writer): while
it runs, parts appear (live views read them); when it ends -- COMPLETE, FAIL, STOPPED, its
worker died, or the controller shut down -- its rows are written as ONE attempt file and then its
parts are deleted; every :data:`FANOUT` attempt files are merged into a level-1 segment, every
:data:`FANOUT` level-1 segments into a level-2 one, each written before its inputs are deleted.
10,000 trials x 3 seeds leave ~120 files instead of one per attempt (or hundreds of thousands of
parts).

The reading rule (:class:`TraceSet`), which makes every crash window harmless: an attempt's rows
come from ONE source -- the segment that lists it, else its attempt file, else its parts (in part
order, a repeated step keeping the last written). So a file that is written but whose inputs are
not yet deleted (a SIGKILL between the two) is never counted twice, and a reader that listed a
file a compaction deleted since lists again. At resume, :meth:`TraceCompactor.recover` deletes
what is covered and compacts the parts of attempts that never were.

Plain readers: each file is an ordinary Parquet file with the key columns, so
``pyarrow.dataset.dataset("traces/")`` and ``pandas.read_parquet("traces/")`` read the rows
(they skip ``.``/``_`` temp names); outside a crash window no row is in two files, and a
``drop_duplicates(["trial", "seed", "attempt", "step"], keep="last")`` makes any moment safe.
Files may differ in their metric columns (pass a schema unified over the files to see them all,
see the README).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweeper.encoding import column

if TYPE_CHECKING:
    from sweeper.store import SweepStore

TRACES_DIR = "traces"
TRACE_KEYS = ("trial", "seed", "attempt", "step")
ATTEMPT_KEYS = ("trial", "seed", "attempt")

FANOUT = 16
"""Files merged into one segment of the next level (attempt files -> level 1 -> level 2)."""
MAX_LEVEL = 2
"""The highest segment level: a level-2 segment holds FANOUT**2 = 256 attempts (~51,000 rows of
a 200-step job), so a merge never holds more than that in memory."""

COVERAGE_KEY = b"sweeper.attempts"
"""Parquet key-value metadata of a segment: the attempts it holds, JSON ``[[t, s, a], ...]``."""

Key = tuple[int, int, int]
"""An attempt: (trial, seed, attempt)."""

_PART = re.compile(r"^t(\d+)-s(-?\d+)-a(\d+)-p(\d+)\.parquet$")
_ATTEMPT = re.compile(r"^t(\d+)-s(-?\d+)-a(\d+)\.parquet$")
_SEGMENT = re.compile(r"^seg(\d)-(\d+)\.parquet$")
# Reads are I/O plus decoding that releases the GIL: a thread per core locally, more for an
# object store, where each read waits on a round trip.
_LOCAL_READ_THREADS = max(os.cpu_count() or 2, 2)
_REMOTE_READ_THREADS = 16
_RELISTS = 5  # a compaction deleted a listed file: list again, at most this many times


# --------------------------------------------------------------------------- names


def part_name(key: Key, part: int) -> str:
    """``t000003-s0-a1-p00002.parquet``: part ``part`` of attempt ``key``."""
    return f"t{key[0]:06d}-s{key[1]}-a{key[2]}-p{part:05d}.parquet"


def attempt_name(key: Key) -> str:
    """``t000003-s0-a1.parquet``: the compacted rows of attempt ``key``."""
    return f"t{key[0]:06d}-s{key[1]}-a{key[2]}.parquet"


def segment_name(level: int, seq: int) -> str:
    """``seg1-000007.parquet``: segment number ``seq`` of ``level``."""
    return f"seg{level}-{seq:06d}.parquet"


@dataclass
class Listing:
    """The visible files of traces/, by kind."""

    parts: dict[Key, list[tuple[int, str]]] = field(default_factory=dict)
    """attempt -> [(part number, name)] in part order."""
    attempts: dict[Key, str] = field(default_factory=dict)
    segments: list[tuple[int, int, str]] = field(default_factory=list)
    """(level, seq, name), highest level first, then by seq."""
    other: list[str] = field(default_factory=list)
    """``*.parquet`` files with names of none of the kinds above (read as they are)."""

    @property
    def names(self) -> list[str]:
        """Every file, in reading order: segments, attempt files, parts, others."""
        out = [name for _, _, name in self.segments]
        out += [self.attempts[k] for k in sorted(self.attempts)]
        out += [name for k in sorted(self.parts) for _, name in self.parts[k]]
        return out + self.other


def classify(names: Iterable[str]) -> Listing:
    """Sort file names of traces/ into a :class:`Listing` (non-Parquet names are ignored)."""
    out = Listing()
    for name in names:
        if m := _PART.match(name):
            key = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
            out.parts.setdefault(key, []).append((int(m.group(4)), name))
        elif m := _ATTEMPT.match(name):
            out.attempts[(int(m.group(1)), int(m.group(2)), int(m.group(3)))] = name
        elif m := _SEGMENT.match(name):
            out.segments.append((int(m.group(1)), int(m.group(2)), name))
        elif name.endswith(".parquet"):
            out.other.append(name)
    for parts in out.parts.values():
        parts.sort()
    out.segments.sort(key=lambda s: (-s[0], s[1]))
    out.other.sort()
    return out


def list_traces(store: SweepStore) -> Listing:
    """The visible files of a sweep's traces/ (temp and hidden names skipped)."""
    return classify(store._listdir(TRACES_DIR))


def file_order(name: str) -> tuple[int, ...]:
    """A sort key putting files in reading order: segments, then by (trial, seed, attempt,
    part) with an attempt file before its parts, then other names."""
    if m := _SEGMENT.match(name):
        return (0, -int(m.group(1)), int(m.group(2)))
    if m := _ATTEMPT.match(name):
        return (1, *(int(g) for g in m.groups()), -1)
    if m := _PART.match(name):
        return (1, *(int(g) for g in m.groups()))
    return (2,)


# --------------------------------------------------------------------------- tables


def trace_table(trial: int, seed: int, attempt: int, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """The Parquet table of one attempt's step ``rows``: the keys int64, then one column per
    metric -- float64 (NaN where not measured) when every value is a number, else typed by
    pyarrow (text when mixed)."""
    n = len(rows)
    if any("step" not in r for r in rows):
        raise ValueError("every trace row needs a 'step'")
    cols: dict[str, pa.Array] = {
        "trial": pa.array([int(trial)] * n, type=pa.int64()),
        "seed": pa.array([int(seed)] * n, type=pa.int64()),
        "attempt": pa.array([int(attempt)] * n, type=pa.int64()),
        "step": pa.array([int(r["step"]) for r in rows], type=pa.int64()),
    }
    metrics: dict[str, None] = {}
    for r in rows:
        metrics.update(dict.fromkeys(k for k in r if k not in TRACE_KEYS))
    for m in metrics:
        values = [r.get(m) for r in rows]
        if all(v is None or isinstance(v, int | float) for v in values):
            cols[m] = pa.array(
                [math.nan if v is None else float(v) for v in values], type=pa.float64()
            )
        else:
            cols[m] = column(values)
    return pa.table(cols)


def coverage_of(table: pa.Table) -> list[Key] | None:
    """The attempts a segment's metadata lists; None when it lists none (not a segment)."""
    raw = (table.schema.metadata or {}).get(COVERAGE_KEY)
    return _decode_coverage(raw)


def _decode_coverage(raw: bytes | None) -> list[Key] | None:
    if raw is None:
        return None
    try:
        return [(int(t), int(s), int(a)) for t, s, a in json.loads(raw)]
    except (ValueError, TypeError):
        return None


def _with_coverage(table: pa.Table, keys: Iterable[Key]) -> pa.Table:
    meta = dict(table.schema.metadata or {})
    meta[COVERAGE_KEY] = json.dumps(sorted(set(keys))).encode()
    return table.replace_schema_metadata(meta)


def _attempt_keys(table: pa.Table) -> list[Key]:
    """The distinct attempts of a table's rows."""
    if table.num_rows == 0:
        return []
    arrays = [table[k].to_numpy() for k in ATTEMPT_KEYS]
    starts = _block_starts(arrays)
    return sorted(
        {(int(t), int(s), int(a)) for t, s, a in zip(*(x[starts] for x in arrays), strict=False)}
    )


def _empty() -> pa.Table:
    return pa.table({k: pa.array([], type=pa.int64()) for k in TRACE_KEYS})


def _block_starts(keys: Sequence[np.ndarray]) -> np.ndarray:
    """Indices where the run of equal ``keys`` rows changes (0 first)."""
    n = len(keys[0])
    change = np.zeros(max(n - 1, 0), dtype=bool)
    for k in keys:
        change |= k[1:] != k[:-1]
    return np.flatnonzero(np.concatenate([[True], change])) if n else np.empty(0, dtype="int64")


def combine(tables: Sequence[pa.Table], keep: Callable[[Key], bool] | None = None) -> pa.Table:
    """Tables of step rows (in the order written) as one table sorted by the keys, numeric
    metrics float64, a repeated ``(trial, seed, attempt, step)`` keeping the last written; with
    ``keep`` only the attempts for which it is true.

    Fast path (every compacted file, and parts streamed in order): each attempt's rows are one
    contiguous run with increasing steps, so only the ~30,000 runs are sorted, not the rows.
    Otherwise a stable sort of the rows and a keep-last de-duplication."""
    tables = [t for t in tables if t.num_rows] or [_empty()]
    table = pa.concat_tables(
        [t.replace_schema_metadata(None) for t in tables], promote_options="permissive"
    )  # chunked: no copy of the rows here
    for i, f in enumerate(table.schema):
        numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
        if f.name not in TRACE_KEYS and numeric and f.type != pa.float64():
            table = table.set_column(i, f.name, table.column(i).cast(pa.float64()))
        elif f.name in TRACE_KEYS and f.type != pa.int64():
            table = table.set_column(i, f.name, table.column(i).cast(pa.int64()))
    n = table.num_rows
    if n == 0:
        return table
    starts, bt, bs, ba, steps_ok = _runs(table)
    lengths = np.diff(np.append(starts, n))
    if keep is not None:
        wanted = np.fromiter(
            (
                keep((t, s, a))
                for t, s, a in zip(bt.tolist(), bs.tolist(), ba.tolist(), strict=False)
            ),
            dtype=bool,
            count=len(starts),
        )
    else:
        wanted = np.ones(len(starts), dtype=bool)
    order = np.lexsort((ba, bs, bt))
    dup_block = np.zeros(len(order), dtype=bool)
    if len(order) > 1:
        o = order
        dup_block[1:] = (bt[o][1:] == bt[o][:-1]) & (bs[o][1:] == bs[o][:-1])
        dup_block[1:] &= ba[o][1:] == ba[o][:-1]
    if steps_ok and not dup_block.any():
        order = order[wanted[order]]
        if len(order) == len(starts) and np.array_equal(order, np.arange(len(order))):
            return table
        new_len = lengths[order]
        offsets = np.cumsum(new_len) - new_len
        idx = np.repeat(starts[order] - offsets, new_len) + np.arange(int(new_len.sum()))
        return table.take(idx)
    # Slow path: rows of one attempt in several runs, or steps repeated / out of order.
    if not wanted.all():
        table = table.filter(np.repeat(wanted, lengths))
    trial, seed, attempt, step = (table[k].to_numpy() for k in TRACE_KEYS)
    if table.num_rows == 0:
        return table
    rows = np.lexsort((step, attempt, seed, trial))  # stable: equal keys stay in write order
    keys = [k[rows] for k in (trial, seed, attempt, step)]
    same_as_next = np.ones(len(rows) - 1, dtype=bool)
    for k in keys:
        same_as_next &= k[1:] == k[:-1]
    return table.take(rows[np.append(~same_as_next, True)])


def _runs(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """The runs of equal (trial, seed, attempt) rows of a chunked table, found chunk by chunk
    (no copy of the rows): their starts, keys, and whether steps increase within every run.
    A run continuing into the next chunk (a running attempt's next part) is joined to it when
    its steps go on increasing."""
    cols = [table[k] for k in TRACE_KEYS]
    starts, keys, first, last, ok, offset = [], [], [], [], True, 0
    for i in range(cols[0].num_chunks):
        t, s, a, step = (c.chunk(i).to_numpy() for c in cols)
        m = len(t)
        if m == 0:
            continue
        st = _block_starts([t, s, a])
        inner = np.ones(m - 1, dtype=bool)
        inner[st[1:] - 1] = False
        ok = ok and bool(np.all(step[1:][inner] > step[:-1][inner]))
        ends = np.append(st[1:], m) - 1
        starts.append(st + offset)
        keys.append(np.stack([t[st], s[st], a[st]]))
        first.append(step[st])
        last.append(step[ends])
        offset += m
    all_starts = np.concatenate(starts)
    k = np.concatenate(keys, axis=1)
    f, la = np.concatenate(first), np.concatenate(last)
    join = np.zeros(len(all_starts), dtype=bool)
    join[1:] = (k[:, 1:] == k[:, :-1]).all(axis=0) & (f[1:] > la[:-1])
    keep = ~join
    return all_starts[keep], k[0][keep], k[1][keep], k[2][keep], ok


def is_sorted(frame: pd.DataFrame, keys: Sequence[str]) -> bool:
    """Whether ``frame`` is sorted by ``keys`` (lexicographically, ties allowed); O(rows)."""
    if len(frame) < 2:
        return True
    ahead = np.zeros(len(frame) - 1, dtype=bool)  # decided: greater on an earlier key
    for k in keys:
        x = frame[k].to_numpy()
        if np.any(~ahead & (x[1:] < x[:-1])):
            return False
        ahead |= x[1:] > x[:-1]
    return True


def attempt_mask(frame: pd.DataFrame, keys: Iterable[Key]) -> np.ndarray:
    """Row mask of ``frame`` (with trial, seed, attempt columns): the rows of the attempts in
    ``keys``. Decided per run of equal attempt keys, so a sorted frame costs ~its runs."""
    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=bool)
    arrays = [frame[k].to_numpy(dtype="int64") for k in ATTEMPT_KEYS]
    starts = _block_starts(arrays)
    wanted = set(keys)
    heads = zip(*(a[starts].tolist() for a in arrays), strict=False)
    block = np.fromiter((k in wanted for k in heads), dtype=bool, count=len(starts))
    return np.repeat(block, np.diff(np.append(starts, n)))


def latest_attempt_mask(frame: pd.DataFrame) -> np.ndarray:
    """Row mask: the rows of each (trial, seed)'s highest attempt (a retried job's last try)."""
    n = len(frame)
    if n == 0:
        return np.zeros(0, dtype=bool)
    t, s, a = (frame[k].to_numpy(dtype="int64") for k in ATTEMPT_KEYS)
    starts = _block_starts([t, s, a])
    bt, bs, ba = t[starts], s[starts], a[starts]
    order = np.lexsort((ba, bs, bt))
    last_of_pair = np.ones(len(order), dtype=bool)  # in sorted block order: top attempt
    last_of_pair[:-1] = (bt[order][1:] != bt[order][:-1]) | (bs[order][1:] != bs[order][:-1])
    top = np.empty(len(starts), dtype="int64")  # per block: its pair's top attempt
    pair_id = np.cumsum(np.concatenate([[True], last_of_pair[:-1]]))  # 1-based, sorted order
    top[order] = ba[order][last_of_pair][pair_id - 1]
    return np.repeat(ba == top, np.diff(np.append(starts, n)))


# --------------------------------------------------------------------------- reading


def read_file(
    store: SweepStore, name: str, wanted: Callable[[str], bool] | None = None
) -> pa.Table:
    """One file of traces/: all columns, or the keys and those ``wanted`` says yes to. Raises
    FileNotFoundError when it vanished (a compaction deleted it), and the store's one-line
    :func:`~sweeper.store.damaged` error when it does not read."""
    rel = f"{TRACES_DIR}/{name}"
    # Opened for random access: a projection reads only its columns' byte ranges (which
    # matters on an object store).
    source = store.open_input(rel)  # FileNotFoundError when absent
    try:
        with pq.ParquetFile(source) as f:
            names = f.schema_arrow.names
            missing = [k for k in TRACE_KEYS if k not in names]
            if missing:
                raise ValueError(f"no {missing[0]!r} column")
            keep = names if wanted is None else [c for c in names if c in TRACE_KEYS or wanted(c)]
            table = f.read(columns=keep, use_threads=False)
            return table.replace_schema_metadata(f.schema_arrow.metadata)
    except (OSError, pa.ArrowException, ValueError) as err:  # truncated, empty, not Parquet
        if not store.exists(rel):
            raise FileNotFoundError(store.path(rel)) from None
        raise store.damaged(rel, err) from None
    finally:
        source.close()


class TraceSet:
    """The step rows of a sweep, read file by file and cached: a file's content never changes
    once it appears (each name is written once, atomically), so a :meth:`refresh` reads only
    the files new since the last, and forgets those a compaction deleted.

    ``wanted(column)`` picks the metric columns read (the keys always are; None: all).
    """

    def __init__(self, store: SweepStore, wanted: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.wanted = wanted
        self.listing = Listing()
        self.tables: dict[str, pa.Table] = {}
        self.coverage: dict[str, list[Key]] = {}
        """segment name -> the attempts it lists."""

    @property
    def files(self) -> list[str]:
        """The files the rows come from (covered leftovers excluded), in reading order."""
        return self._chosen()

    def read_many(self, names: list[str], wanted: Callable[[str], bool] | None) -> list[pa.Table]:
        """Read ``names`` (in threads when many), the columns ``wanted`` picks (None: all)."""
        pick = wanted
        if len(names) < 8:
            return [read_file(self.store, n, pick) for n in names]
        threads = _LOCAL_READ_THREADS if self.store.is_local else _REMOTE_READ_THREADS
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda n: read_file(self.store, n, pick), names))

    def _covered(self) -> set[Key]:
        return {k for name in self.coverage for k in self.coverage[name]}

    def _chosen(self) -> list[str]:
        """Segments, then attempt files no segment lists, then parts of attempts with neither;
        then other files (the reading rule of the module docstring)."""
        covered = self._covered()
        out = [name for _, _, name in self.listing.segments]
        out += [n for k, n in sorted(self.listing.attempts.items()) if k not in covered]
        for key in sorted(self.listing.parts):
            if key not in covered and key not in self.listing.attempts:
                out += [name for _, name in self.listing.parts[key]]
        return out + self.listing.other

    def refresh(self) -> bool:
        """List traces/ and read what is new; True when the set of files changed."""
        before = set(self.tables)
        for _ in range(_RELISTS):
            try:
                self._refresh_once()
                break
            except FileNotFoundError:
                continue  # compacted while we read: the replacement is listed now
        else:
            self._refresh_once()
        return set(self.tables) != before

    def _refresh_once(self) -> None:
        self.listing = list_traces(self.store)
        present = set(self.listing.names)
        for name in [n for n in self.tables if n not in present]:
            del self.tables[name]
            self.coverage.pop(name, None)
        segments = [n for _, _, n in self.listing.segments if n not in self.tables]
        for name, table in zip(segments, self.read_many(segments, self.wanted), strict=True):
            self.tables[name] = table
            self.coverage[name] = coverage_of(table) or _attempt_keys(table)
        rest = [n for n in self._chosen() if n not in self.tables]
        for name, table in zip(rest, self.read_many(rest, self.wanted), strict=True):
            self.tables[name] = table

    def table(self, keep: Callable[[Key], bool] | None = None) -> pa.Table:
        """Every row (of the attempts ``keep`` accepts) as one table, shaped by
        :func:`combine`."""
        return combine([self.tables[n] for n in self._chosen()], keep)

    def files_of(self, trials: set[int]) -> list[str]:
        """The chosen files that may hold rows of ``trials``."""
        out = []
        for name in self._chosen():
            m = _PART.match(name) or _ATTEMPT.match(name)
            if m is not None:
                if int(m.group(1)) in trials:
                    out.append(name)
            elif name in self.coverage:
                if any(k[0] in trials for k in self.coverage[name]):
                    out.append(name)
            else:
                out.append(name)
        return out


def read_traces(
    store: SweepStore,
    columns: Iterable[str] | None = None,
    keep: Callable[[Key], bool] | None = None,
) -> pa.Table:
    """Every step row of a sweep (the attempts ``keep`` accepts) sorted by the keys, each
    ``(trial, seed, attempt, step)`` once; only the keys and ``columns`` when given (those
    present in some file)."""
    wanted = None if columns is None else set(columns).__contains__
    ts = TraceSet(store, wanted)
    ts.refresh()
    return ts.table(keep)


# --------------------------------------------------------------------------- compaction


class TraceCompactor:
    """The writer side of traces/: ends attempts (one attempt file each), merges them into
    segments, and cleans up after a crash (:meth:`recover`). One per controller; it keeps the
    files awaiting a merge per level in memory (at most ``fanout`` each)."""

    def __init__(self, store: SweepStore, fanout: int = FANOUT, max_level: int = MAX_LEVEL) -> None:
        if fanout < 2 or max_level < 0:
            raise ValueError("fanout must be >= 2 and max_level >= 0")
        self.store = store
        self.fanout = fanout
        self.max_level = max_level
        self._pending: dict[int, list[str]] | None = None  # level -> files awaiting a merge
        self._seq: dict[int, int] = {}

    def _rel(self, name: str) -> str:
        return f"{TRACES_DIR}/{name}"

    def _state(self) -> dict[int, list[str]]:
        if self._pending is None:
            self._init_state(list_traces(self.store))
        assert self._pending is not None
        return self._pending

    def _init_state(self, listing: Listing) -> None:
        self._pending = {0: [listing.attempts[k] for k in sorted(listing.attempts)]}
        for level, seq, name in sorted(listing.segments):
            self._seq[level] = max(self._seq.get(level, 0), seq + 1)
            if level < self.max_level:
                self._pending.setdefault(level, []).append(name)

    def write_part(self, key: Key, part: int, table: pa.Table) -> str:
        """Write part ``part`` of a running attempt (atomically); returns its name."""
        name = part_name(key, part)
        self.store._write_table(self._rel(name), table)
        return name

    def end_attempt(self, key: Key, tables: Sequence[pa.Table], parts: Sequence[str]) -> None:
        """An attempt ended: write its rows (``tables``: its parts' tables and the rows not yet
        flushed, in the order produced) as one attempt file, then delete its ``parts``, then
        merge what is due. Nothing is written for an attempt without rows."""
        rows = combine(list(tables))
        if rows.num_rows:
            name = attempt_name(key)
            self.store._write_table(self._rel(name), rows)
            pending = self._state()
            if name not in pending[0]:
                pending[0].append(name)
        for part in parts:
            self._delete(part)
        self.merge_due()

    def merge_due(self) -> None:
        """Merge every level that holds ``fanout`` files awaiting a merge."""
        pending = self._state()
        for level in range(self.max_level):
            while len(pending.get(level, [])) >= self.fanout:
                batch = pending[level][: self.fanout]
                out = self._merge(level + 1, batch)
                pending[level] = pending[level][self.fanout :]
                if level + 1 < self.max_level:
                    pending.setdefault(level + 1, []).append(out)

    def _merge(self, level: int, names: list[str]) -> str:
        """Write the rows of ``names`` as one segment of ``level``, then delete them."""
        out = self.write_segment(level, [read_file(self.store, n) for n in names])
        for name in names:
            self._delete(name)
        return out

    def write_segment(self, level: int, tables: Sequence[pa.Table]) -> str:
        """Write ``tables`` (attempt files' or segments' rows) as one new segment of ``level``
        listing the attempts they hold; returns its name. (What a merge writes; a tool building
        a finished sweep dir can write full segments directly.)"""
        keys: set[Key] = set()
        for table in tables:
            keys.update(coverage_of(table) or _attempt_keys(table))
        self._state()  # the sequence numbers continue after the segments on disk
        seq = self._seq.get(level, 0)
        self._seq[level] = seq + 1
        out = segment_name(level, seq)
        self.store._write_table(self._rel(out), _with_coverage(combine(tables), keys))
        return out

    def _delete(self, name: str) -> None:
        self.store.remove(self._rel(name))

    def recover(self) -> dict[str, int]:
        """After a controller ended (killed or not): delete temp files, files a segment or an
        attempt file covers, compact the parts of attempts that never were, merge what is due.
        Returns counts of what it did (``deleted``, ``compacted``)."""
        deleted = self.store.remove_temp_files(TRACES_DIR)  # of writes a crash cut short
        listing = list_traces(self.store)
        covered: set[Key] = set()
        for _, _, name in listing.segments:
            covered.update(coverage_of(read_file(self.store, name, lambda c: False)) or [])
        for key, name in list(listing.attempts.items()):
            if key in covered:
                self._delete(name)
                del listing.attempts[key]
                deleted += 1
        compacted = 0
        for key, parts in sorted(listing.parts.items()):
            names = [n for _, n in parts]
            if key in covered or key in listing.attempts:
                for n in names:
                    self._delete(n)
                deleted += len(names)
                continue
            rows = combine([read_file(self.store, n) for n in names])
            if rows.num_rows:
                self.store._write_table(self._rel(attempt_name(key)), rows)
                listing.attempts[key] = attempt_name(key)
            for n in names:
                self._delete(n)
            compacted += 1
        listing.parts.clear()
        self._init_state(listing)
        self.merge_due()
        return {"deleted": deleted, "compacted": compacted}
