"""Question/answer task files (GSM8K-style JSONL or Parquet): reading their records, torch-free.

The job's ``gsm8k`` task (``sweeper.rl.tasks.FileQATask``) reads every record with
:func:`read_task_rows`; the preflight (``sweeper.preflight``) reads the first few the same way
before a sweep starts, so a missing, misnamed or malformed file is one line and no sweep dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweeper.errors import InputError

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")


def read_task_rows(
    path: str | Path, limit: int | None = None, where: str = "task.path"
) -> list[Any]:
    """The records of a task file (the first ``limit`` of them, if given).

    JSONL: one JSON value per non-blank line; Parquet: one dict per row. ``InputError``
    (``<where>: ...``, one line) for a file that is missing, not a file, of another kind,
    unreadable, or not valid JSON / Parquet (with the line number for JSONL).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{where}: file not found: {path}")
    if not path.is_file():
        raise InputError(f"{where}: {path} is not a file")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl(path, limit, where)
    if suffix in PARQUET_SUFFIXES:
        return _read_parquet(path, limit, where)
    raise InputError(f"{where}: {path}: expected a .jsonl or .parquet file")


def _read_jsonl(path: Path, limit: int | None, where: str) -> list[Any]:
    rows: list[Any] = []
    try:
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if limit is not None and len(rows) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise InputError(f"{where}: {path}:{lineno}: not valid JSON ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{where}: {path}: cannot read it ({err})") from None
    return rows


def _read_parquet(path: Path, limit: int | None, where: str) -> list[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if limit is None:
            return pq.read_table(path).to_pylist()
        batches = pq.ParquetFile(path).iter_batches(batch_size=max(limit, 1))
        first = next(batches, None)
        return [] if first is None else first.to_pylist()[:limit]
    except (pa.ArrowException, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{where}: {path}: not a readable Parquet file ({first_line})") from None
