"""The base of every config schema: unknown keys are errors, and numbers are numbers.

Every model in :mod:`sweeper.config` derives from :class:`StrictModel`, which gives each field,
without anything written on the field:

- ``extra="forbid"``: a typo is an error that lists the valid keys;
- no ``inf`` or ``nan`` in a float field (``allow_inf_nan=False``); a field where infinity means
  something says so with ``Field(allow_inf_nan=True)`` and a bound that refuses ``nan``
  (``ge=0.0``), as ``eps_high`` does;
- no boolean where a number is meant (pydantic would read ``steps: true`` as 1), and no integer
  beyond 64 bits (it could not be written to Parquet).

The rule for a new numeric field: give it the bounds that make sense (``ge``/``gt``, and ``le``/
``lt`` where there is a natural end); ``tests/unit/test_schema_bounds.py`` walks every numeric
field of every schema and fails for one without a lower bound or one that accepts ``inf``,
``nan`` or a boolean, unless the test lists it with the reason.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator

INT64_MAX = 2**63 - 1
"""The largest integer a config field accepts (Parquet columns are int64)."""


def _alternatives(tp: Any) -> list[Any]:
    """The types a field may hold: Annotated and Optional stripped, unions flattened."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _alternatives(get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return [t for a in get_args(tp) if a is not type(None) for t in _alternatives(a)]
    return [tp]


def is_numeric(tp: Any) -> bool:
    """Whether a field's type is a number (int or float, optionally None)."""
    alts = _alternatives(tp)
    return bool(alts) and all(a in (int, float) for a in alts)


def _numeric_items(tp: Any) -> bool:
    """Whether a field is a list or a mapping of numbers (``seeds``, ``ks``, ``custom``)."""
    for alt in _alternatives(tp):
        origin, args = get_origin(alt), get_args(alt)
        if origin in (list, tuple) and args and is_numeric(args[0]):
            return True
        if origin is dict and len(args) == 2 and is_numeric(args[1]):
            return True
    return False


class _NotANumber:
    """Stands in for a value a numeric field must not take (a boolean, an integer beyond 64
    bits), so that pydantic refuses it at its own location with its own message: "job.steps:
    Input should be a valid integer (got true)"."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        if isinstance(self.value, bool):
            return str(self.value).lower()
        return f"{self.value} (beyond 64 bits)"


def _screen(value: Any) -> Any:
    """``value``, or a :class:`_NotANumber` for a boolean or an integer beyond 64 bits."""
    if isinstance(value, bool) or (isinstance(value, int) and not -INT64_MAX <= value <= INT64_MAX):
        return _NotANumber(value)
    return value


class StrictModel(BaseModel):
    """Unknown keys are errors; numeric fields take finite numbers only (see the module)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        screened = {}
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None:
                continue
            if is_numeric(field.annotation):
                new = _screen(value)
            elif _numeric_items(field.annotation) and isinstance(value, list):
                new = [_screen(v) for v in value]
            elif _numeric_items(field.annotation) and isinstance(value, dict):
                new = {k: _screen(v) for k, v in value.items()}
            else:
                continue
            if new is not value and new != value:
                screened[name] = new
        return {**data, **screened} if screened else data
