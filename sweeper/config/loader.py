"""Loading config files: YAML (duplicate keys are errors), ``--set a.b.c=value`` overrides, and
validation into the schemas with one-line errors naming the file and field.

- :func:`load_recipe`: read, override, validate and check a recipe file;
- :func:`load_cluster`: read and validate a cluster file;
- :func:`parse_yaml`, :func:`read_mapping`, :func:`parse_override`: the pieces.
"""

from __future__ import annotations

import copy
import math
import os
import re
from typing import Any

import yaml
from pydantic import ValidationError

from sweeper.config.cluster import ClusterConfig
from sweeper.config.dotted import assign_dotted
from sweeper.config.messages import explain_validation_error
from sweeper.config.recipe import Recipe
from sweeper.errors import InputError

MAX_DEPTH = 64
"""Deepest nesting a config file may have (recipes need about 6 levels; Python's recursion
limit is hit near 300)."""

MAX_NODES = 200_000
"""Most YAML nodes a file may expand to, aliases counted once per use (a 2 KB alias bomb
expands to billions)."""

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution). PyYAML resolves by
# YAML 1.1, where `1e-1` is a string (so a grid [1e-1, 0.1] would hold two configs that are the
# same number), `yes`/`on` are booleans, `1:30` is 90 and `2024-01-01` a date.
_CORE_SCALARS: tuple[tuple[str, str, list[str]], ...] = (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+0123456789."),
    ),
)


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(yaml.SafeLoader):
    """A safe YAML loader for config files: YAML 1.2 core scalars, a key given twice in one
    mapping is an error (a silent overwrite otherwise), and nesting and alias expansion are
    bounded (:data:`MAX_DEPTH`, :data:`MAX_NODES`)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases make it expand past :data:`MAX_NODES` nodes or
    :data:`MAX_DEPTH` levels, or that contains itself. Each node's expanded size and depth are
    computed once (iteratively: the graph may be deep), so this costs O(distinct nodes)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            on_stack.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES or depth[key] > MAX_DEPTH:
                what = f"{MAX_NODES} nodes" if size[key] > MAX_NODES else f"{MAX_DEPTH} levels"
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand it to more than {what}", node.start_mark
                )
            continue
        if key in size:
            continue
        on_stack.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_stack:
                raise yaml.composer.ComposerError(
                    None, None, "an alias refers to the node that contains it", child.start_mark
                )
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_mapping(loader: _ConfigLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:  # `<<: *base`: its keys may be overridden here
            continue
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


def _construct_int(loader: _ConfigLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    try:
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)  # YAML 1.2: a leading 0 is still decimal
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not an integer", node.start_mark
        ) from None


def _construct_float(loader: _ConfigLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node))
    word = text.lower().lstrip("+")
    if word in (".inf", "-.inf", ".nan"):
        return {".inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}[word]
    try:
        return float(text)  # 1e400 is inf: the schemas then refuse it where inf means nothing
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not a number", node.start_mark
        ) from None


_ConfigLoader.yaml_implicit_resolvers = {}  # none of YAML 1.1's: only those below
for _tag, _pattern, _first in _CORE_SCALARS:
    _ConfigLoader.add_implicit_resolver(_tag, re.compile(_pattern), _first)
_ConfigLoader.add_implicit_resolver(_MERGE_TAG, re.compile(r"^(?:<<)$"), ["<"])
_ConfigLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_ConfigLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)
# The core schema's tags only: a config holds no bytes, dates, sets or ordered pairs.
for _tag in ("binary", "timestamp", "set", "omap", "pairs"):
    _ConfigLoader.yaml_constructors.pop(f"tag:yaml.org,2002:{_tag}", None)


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
    """YAML text -> data (YAML 1.2 scalars); a syntax error, a duplicate key, nesting deeper than
    :data:`MAX_DEPTH` or aliases expanding past :data:`MAX_NODES` is an ``InputError`` with its
    line."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: safe
    except RecursionError:  # cannot happen below MAX_DEPTH; kept as a guard
        raise InputError(f"{source}: YAML error: nested too deeply") from None
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
    if _glued_keys(value):
        raise InputError(
            f"--set {override!r}: write {{key: value}} with a space after each ':' (YAML reads "
            f"{{a:1}} as the key 'a:1' with no value)"
        )
    return parts, value


def _glued_keys(value: Any) -> bool:
    """Whether a flow mapping holds a key like ``num_gpus:4`` with no value (a missing space)."""
    if isinstance(value, dict):
        return any(
            (isinstance(k, str) and ":" in k and v is None) or _glued_keys(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_glued_keys(v) for v in value)
    return False


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
