"""Validation errors as one line: the file, the field and what is wrong; for an unknown key (a
typo), the valid keys at that place."""

from __future__ import annotations

import functools
import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from sweeper.config.job import JobConfig, TaskConfig
from sweeper.config.loss import LossConfig
from sweeper.config.space import ParamSpec


def describe_validation_error(err: ValidationError, source: str = "") -> str:
    """One line naming the offending field(s) and what is wrong, e.g.
    ``recipe.yaml: job.loss.eps_low: Input should be less than or equal to 1 (got 1.5)``."""
    parts = []
    for e in err.errors():
        # Drop pydantic's union-branch tags (e.g. 'nsr', 'function-after[...]') from the path.
        loc = ".".join(
            str(p)
            for p in e["loc"]
            if not (isinstance(p, str) and ("[" in p or p in _union_tags()))
        )
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        detail = f"{loc}: {msg}" if loc else msg
        if e["type"] not in ("value_error", "missing", "extra_forbidden") and not isinstance(
            got, dict | list
        ):
            detail += f" (got {got!r})"
        if e["type"] == "extra_forbidden":
            detail = f"{loc}: unknown key"
        parts.append(detail)
    prefix = f"{source}: " if source else ""
    return prefix + "; ".join(parts)


@functools.cache
def _union_tags() -> frozenset[str]:
    """The discriminator values (``kind``/``type``) of the tagged unions in the schemas: pydantic
    puts them into error locations, where they would only confuse a user."""
    tags = set()
    for union in (JobConfig, TaskConfig, LossConfig, ParamSpec):
        members: tuple[Any, ...] = get_args(get_args(union)[0])
        for model in members:
            if isinstance(model, type) and issubclass(model, BaseModel):
                for field in ("kind", "type"):
                    if field in model.model_fields:
                        tags.add(str(model.model_fields[field].default))
    return frozenset(tags)


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
