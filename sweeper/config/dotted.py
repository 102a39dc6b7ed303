"""Dotted keys into nested config data: ``loss.eps_low`` names ``data["loss"]["eps_low"]``.

Used wherever a dotted key meets plain data: a trial's params assigned into its job, ``--set``
overrides, an exported recipe.
"""

from __future__ import annotations

from typing import Any

from sweeper.errors import InputError


def assign_dotted(data: Any, parts: list[str], value: Any, where: str) -> None:
    """``data[p0][p1]...[pn] = value``, creating missing mappings on the way (a digit indexes an
    existing list element). ``InputError`` naming ``where`` if a step is not a mapping."""
    if not parts or any(p == "" for p in parts):
        raise InputError(f"{where}: empty path segment")
    node = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise InputError(f"{where}: {'.'.join(parts[:i]) or 'top level'} is not a mapping")
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise InputError(f"{where}: {'.'.join(parts[:-1])} is not a mapping")
