"""How row values become JSON text and Arrow columns, for every file the sweep dir holds.

One place for the rules the store, the table log and the trace files share: what ``json`` cannot
encode by itself (datetimes, numpy values, paths, sets), and how a column of mixed Python values
is typed (numbers as float64, otherwise as pyarrow infers, text when that fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa


def json_default(obj: Any) -> Any:
    """Encode what ``json`` cannot: datetimes and timestamps (ISO 8601), numpy scalars and
    arrays, paths, sets and tuples."""
    if hasattr(obj, "isoformat"):  # datetime, date, pandas Timestamp
        return obj.isoformat()
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def is_number(v: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(v, int | float) and not isinstance(v, bool)


def column(values: list[Any]) -> pa.Array:
    """Type a column of values: numbers (None allowed) as float64, everything else as pyarrow
    infers it, and as text when it cannot (a column mixing types)."""
    present = [v for v in values if v is not None]
    if present and all(is_number(v) for v in present):
        return pa.array([None if v is None else float(v) for v in values], type=pa.float64())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
