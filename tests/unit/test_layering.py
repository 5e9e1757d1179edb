"""The shape of zq/: no import circle, no oversized module, no I/O where none belongs.

The import graph is built from the source (every ``import`` and ``from ... import``
of a zq module, wherever it stands, except under ``if TYPE_CHECKING:``), so a lazy
import inside a function counts too: a circle hidden that way is still a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "zq"
MAX_LINES = 500
IO_MODULES = ("asyncio", "zmq", "aiosqlite", "sqlite3")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> set[str]:
    """The zq modules ``path`` imports (outside TYPE_CHECKING blocks)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                base = child.module
                for a in child.names:  # a submodule, or a name of the module itself
                    sub = f"{base}.{a.name}"
                    found.add(sub if sub in MODULES else base)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_circle_inside_zq() -> None:
    graph = {name: imports_of(path) - {name} for name, path in MODULES.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_small_enough_to_hold_in_mind(name: str) -> None:
    lines = MODULES[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


@pytest.mark.parametrize("module", ["zq.protocol", "zq.core", "zq.core.facade",
                                    "zq.core.default", "zq.manage", "zq.history", "zq.cluster",
                                    "zq.persistence.base", "zq.client.session",
                                    "zq.client.outbox", "zq.ha.wire", "zq.ha.stream",
                                    "zq.security.permissions", "zq.security.settings",
                                    "zq.security.bounds", "zq.node.supervise",
                                    "zq.policies.scaling",
                                    "zq.router.core", "zq.core.uplink",
                                    "zq.uplink.settings", "zq.uplink.flight"])
def test_cores_without_io_load_no_io_module(module: str) -> None:
    """'No I/O' holds at import time too: a fresh interpreter imports the module and
    finds none of asyncio, zmq, aiosqlite and sqlite3 loaded."""
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {IO_MODULES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"{module} loads {out.stdout.strip()}"
