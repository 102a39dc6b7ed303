"""What every export target shares: the target protocol, the recipe of one exported trial, and
the small text helpers (comments, YAML, override literals).

A target turns the recipe of one trial (the sweep's job with the trial's params set) into one
file. A variant the target cannot express raises ``InputError`` naming the variant, the target
and what the target supports; ``export_best`` renders every file before writing any, so nothing
is written then.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from sweeper.config.dotted import assign_dotted
from sweeper.config.loss import LOSS_PARAMS
from sweeper.config.messages import describe_validation_error
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError


class ExportTarget(Protocol):
    """One export format (``sweeper export --format NAME``)."""

    name: str
    """The ``--format`` value."""
    ext: str
    """File name suffix, e.g. ``.verl.yaml``."""

    def render(self, recipe: Recipe, header: list[str]) -> str:
        """The file's text: ``header`` lines as comments, then the target's content for
        ``recipe`` (the trial's recipe). ``InputError`` for what the target cannot express."""
        ...


def apply_params(job: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the ``job`` dict with each dotted param set; the loss block then keeps only the
    fields its ``kind`` reads (a trial row may carry nulls for parameters of other kinds)."""
    out = copy.deepcopy(job)
    for key, value in params.items():
        assign_dotted(out, key.split("."), value, f"param {key}")
    loss = out.get("loss")
    if isinstance(loss, dict):
        cls = LOSS_PARAMS.get(loss.get("kind", "ppo_clip"))
        if cls is not None:
            out["loss"] = {k: v for k, v in loss.items() if k in cls.model_fields}
    return out


def best_recipe(
    resolved: dict[str, Any], params: dict[str, Any], sweep_name: str, k: int
) -> Recipe:
    """The recipe re-running trial ``params`` of a sweep: same job with the params set, no
    space, a grid over the sweep's seeds, named ``<sweep>-best<k>``."""
    data = copy.deepcopy(resolved)
    data["job"] = apply_params(data.get("job") or {}, params)
    data["space"] = {}
    search = dict(data.get("search") or {})
    data["search"] = {
        "kind": "grid",
        "seeds": search.get("seeds", [0]),
        "max_concurrent": search.get("max_concurrent", 4),
    }
    suffix = f"-best{k}"
    data["name"] = sweep_name[: 100 - len(suffix)] + suffix
    data["description"] = f"Best config #{k} of sweep {sweep_name} (sweeper export)."
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise InputError(describe_validation_error(err, f"export of {sweep_name} #{k}")) from err


def unsupported(kind: str, target: str, counterpart: str, supported: list[str]) -> InputError:
    """The error for a loss kind that ``target`` (the ``--format`` name) has no counterpart for
    in ``counterpart`` (what the target configures)."""
    return InputError(
        f"loss kind {kind!r} has no {counterpart} counterpart; {target} export supports: "
        f"{', '.join(sorted(supported))}"
    )


def override_literal(v: Any) -> str:
    """A value as a Hydra command-line override."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v) if isinstance(v, float) else str(v)


def python_literal(v: Any) -> str:
    """A value as Python source (infinities as ``float("inf")``)."""
    if isinstance(v, float) and math.isinf(v):
        return 'float("inf")' if v > 0 else 'float("-inf")'
    return repr(v)


def comment(lines: list[str]) -> str:
    """Lines as a YAML comment block."""
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)


def dump_yaml(data: Any) -> str:
    """Block-style YAML in insertion order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        assign_dotted(tree, key.split("."), value, key)
    return tree
