"""Loading config files: YAML (duplicate keys are errors), ``--set a.b.c=value`` overrides, and
validation into the schemas with one-line errors naming the file and field.

- :func:`load_recipe`: read, override, validate and check a recipe file;
- :func:`load_cluster`: read and validate a cluster file;
- :func:`parse_yaml`, :func:`read_mapping`, :func:`parse_override`: the pieces.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml
from pydantic import ValidationError

from sweeper.config.cluster import ClusterConfig
from sweeper.config.dotted import assign_dotted
from sweeper.config.messages import explain_validation_error
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping (a silent overwrite
    otherwise)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def read_text(path: str) -> str:
    """A file's text; ``InputError`` naming the path if it cannot be read."""
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a YAML file")
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read: {err}") from None


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> data; a syntax error or duplicate key is an ``InputError`` with its line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise InputError(" ".join(f"{source}: YAML error{where}: {problem}".split())) from None


def read_mapping(path: str, what: str) -> tuple[dict[str, Any], str]:
    """Read a YAML file that must hold a mapping; returns (data, text)."""
    text = read_text(path)
    data = parse_yaml(text, path)
    if data is None:
        raise InputError(f"{path}: empty file, expected a {what} (a YAML mapping)")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a {what} (a YAML mapping), got {type(data).__name__}")
    return data, text


def parse_override(override: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (path, value). The value is read as YAML (a scalar or a flow list /
    mapping: ``inf``, ``[0, 1, 2]``, ``{type: uniform, low: 0, high: 1}``). Under ``space`` the
    rest of the key is one dotted parameter key: ``space.loss.eps_low`` -> ["space",
    "loss.eps_low"]."""
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key or not raw.strip():
        raise InputError(f"--set {override!r}: expected KEY=VALUE, e.g. job.loss.eps_high=0.28")
    parts = key.split(".")
    if any(p == "" for p in parts):
        raise InputError(f"--set {override!r}: empty segment in key {key!r}")
    if parts[0] == "space":
        if len(parts) < 2:
            raise InputError(f"--set {override!r}: give space.<dotted key>=<values>")
        parts = ["space", ".".join(parts[1:])]
    value = parse_yaml(raw, f"--set {key}")
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``data`` with every ``--set`` override applied in order. ``space.<key>=null``
    removes that key from the space."""
    data = copy.deepcopy(data)
    for override in overrides:
        parts, value = parse_override(override)
        if parts[0] == "space" and value is None:
            space = data.get("space")
            if isinstance(space, dict):
                space.pop(parts[1], None)
            continue
        assign_dotted(data, parts, value, f"--set {override}")
    return data


def recipe_from_data(data: dict[str, Any], source: str) -> Recipe:
    """Validate recipe data; ``InputError`` (one line naming ``source`` and the field)."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise InputError(explain_validation_error(err, Recipe, source)) from None


def load_recipe(path: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, str]:
    """Load, override, validate and check a recipe file.

    Returns the recipe and the YAML text as submitted; when overrides were given, the text ends
    with comment lines recording them (``# --set job.steps=20``), so the saved copy says how it
    was run. ``recipe.resolved()`` holds the effective values."""
    data, text = read_mapping(path, "recipe")
    if overrides:
        data = apply_overrides(data, overrides)
        if not text.endswith("\n"):
            text += "\n"
        text += "# sweeper: applied overrides\n" + "".join(f"# --set {o}\n" for o in overrides)
    return recipe_from_data(data, path), text


def cluster_from_data(data: dict[str, Any], source: str) -> ClusterConfig:
    """Validate cluster data; ``InputError`` (one line naming ``source`` and the field)."""
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as err:
        raise InputError(explain_validation_error(err, ClusterConfig, source)) from None


def load_cluster(path: str) -> ClusterConfig:
    """Load and validate a cluster file; ``InputError`` on a missing file, bad YAML, unknown
    key, bad address form, or a field the kind does not use."""
    data, _ = read_mapping(path, "cluster file")
    return cluster_from_data(data, path)
