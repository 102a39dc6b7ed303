"""Errors users cause, and how they are shown: one line, exit code 2."""

from __future__ import annotations

import functools
from typing import Any, get_args

from pydantic import BaseModel, ValidationError


class InputError(Exception):
    """Bad user input (recipe, cluster file, path, address): the CLI prints it on one line and
    exits with code 2."""


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
    from sweeper.config.job import JobConfig, TaskConfig
    from sweeper.config.loss import LossConfig
    from sweeper.space import ParamSpec

    tags = set()
    for union in (JobConfig, TaskConfig, LossConfig, ParamSpec):
        members: tuple[Any, ...] = get_args(get_args(union)[0])
        for model in members:
            if isinstance(model, type) and issubclass(model, BaseModel):
                for field in ("kind", "type"):
                    if field in model.model_fields:
                        tags.add(str(model.model_fields[field].default))
    return frozenset(tags)
