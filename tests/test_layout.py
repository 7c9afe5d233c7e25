"""The code's layout holds: import direction between the three floors, no import cycles, modules
under 500 lines, folders of a readable size.

The import graph is read from the source (every ``import`` statement, also inside functions, so
lazy imports count; ``if TYPE_CHECKING:`` blocks do not, they never run). An edge goes to the
module named, or to ``package.name`` when that is a module; implicit parent-package imports are
not edges (that is how import-linter and pydeps count too).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ("models", "storage", "studio")
# What each floor must never import (DESIGN.md: studio -> models, storage; storage never torch).
FORBIDDEN = {
    "models": ("studio", "storage"),
    "storage": ("torch", "models", "studio"),
}
MAX_LINES = 500
MAX_MODULES_PER_FOLDER = 12


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _source_files() -> list[Path]:
    return sorted(p for floor in FLOORS for p in (ROOT / floor).rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, modules: set[str], name: str | None = None) -> set[str]:
    """Modules imported anywhere in ``path`` (absolute names), TYPE_CHECKING blocks excluded."""
    name = name or _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def import_graph() -> dict[str, set[str]]:
    files = _source_files()
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_floors_import_only_downwards() -> None:
    bad = []
    for mod, imported in import_graph().items():
        floor = mod.split(".")[0]
        for target in imported:
            top = target.split(".")[0]
            if top in FORBIDDEN.get(floor, ()):
                bad.append(f"{mod} imports {target}")
    assert not bad, "imports against the floor direction:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_see_a_cycle_and_a_wrong_direction(tmp_path: Path) -> None:
    """The graph test can fail: a made-up cycle and a made-up upward import are found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    src = tmp_path / "m.py"
    src.write_text(
        "import torch\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import studio\n"
        "def f():\n    from models.geometry import cameras\n"
    )
    found = _imports(src, {"models.geometry.cameras"}, name="storage.m")
    assert "torch" in found and "models.geometry.cameras" in found and "studio" not in found


def test_modules_stay_small_and_folders_readable() -> None:
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _source_files()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, "modules over 500 lines:\n" + "\n".join(long)
    per_folder: dict[Path, int] = defaultdict(int)
    for p in _source_files():
        if p.name != "__init__.py" and "migrations" not in p.parts:
            per_folder[p.parent] += 1
    crowded = [
        f"{d.relative_to(ROOT)}: {n}" for d, n in per_folder.items() if n > MAX_MODULES_PER_FOLDER
    ]
    assert not crowded, "folders with too many modules:\n" + "\n".join(crowded)


@pytest.mark.parametrize("floor", FLOORS)
def test_each_floor_imports_cleanly_on_its_own(floor: str) -> None:
    """A fresh interpreter imports every module of the floor; storage pulls in no torch."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"import {floor}\n"
        f"for m in pkgutil.walk_packages({floor}.__path__, '{floor}.'):\n"
        "    if '.migrations' not in m.name and not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-2000:]
    if floor == "storage":
        assert res.stdout.strip().endswith("False"), "importing storage pulled in torch"
