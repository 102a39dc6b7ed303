"""The layout holds: imports flow one way (no cycle, lazy imports included), only the worker
reaches into ``sweeper.rl``, the torch-free core stays torch-free, and no class grows past 300
lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sweeper"
MAX_CLASS_LINES = 300


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))}


def _runtime_nodes(tree: ast.Module) -> list[ast.AST]:
    """Every node of the file except those under ``if TYPE_CHECKING:`` (never executed)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def imports_of(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Every sweeper module ``name`` imports when it runs, at any depth of the file (lazy
    imports in functions included; ``if TYPE_CHECKING:`` blocks, never executed, excluded).
    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``."""
    out: set[str] = set()
    package = name if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists() else None
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("sweeper"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = (package or name.rsplit(".", 1)[0]).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if not base.startswith("sweeper"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    out.discard(name)
    return {m for m in out if m in known}


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    known = set(trees)
    return {name: imports_of(name, tree, known) for name, tree in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_have_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 30  # the walk saw the package
    assert find_cycle(graph) is None


def test_lazy_imports_are_seen_type_only_ones_are_not() -> None:
    graph = import_graph()
    # sweeper.worker imports sweeper.rl.job only inside a method: the walk must still see it.
    assert "sweeper.rl.job" in graph["sweeper.worker"]
    # sweeper.storage imports pyarrow's fs only: no edge to a sweeper module it does not import.
    assert graph["sweeper.storage"] == {"sweeper.errors"}


def test_only_the_worker_imports_the_rl_package() -> None:
    graph = import_graph()
    outside = {
        name: sorted(m for m in deps if m.startswith("sweeper.rl"))
        for name, deps in graph.items()
        if not name.startswith("sweeper.rl") and name != "sweeper.worker"
    }
    assert {k: v for k, v in outside.items() if v} == {}


def test_config_imports_nothing_above_it() -> None:
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("sweeper.config"):
            above = [
                d for d in deps if not d.startswith("sweeper.config") and d != "sweeper.errors"
            ]
            assert above == [], name


@pytest.mark.parametrize(
    "module", ["sweeper.config", "sweeper.search", "sweeper.controller", "sweeper.export"]
)
def test_core_modules_do_not_import_torch(module: str) -> None:
    code = (
        f"import sys; import {module}; "
        "bad = [m for m in ('torch', 'sweeper.rl', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_class_is_over_300_lines() -> None:
    long = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []
