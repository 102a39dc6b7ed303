"""Errors users cause, and how they are shown: one line, exit code 2."""

from __future__ import annotations

from pydantic import ValidationError


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
            str(p) for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in _TAGS))
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


# Discriminator tags pydantic puts into error locations for tagged unions.
_TAGS = {
    "ppo_clip", "nsr", "clip_cov", "kl_cov", "gppo", "gspo",
    "rlvr", "synthetic", "addition", "gsm8k", "random", "user",
    "grid", "choice", "uniform", "log_uniform", "int",
}  # fmt: skip
