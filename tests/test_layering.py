"""The three floors of ``src/strokeseg``, read from every import statement (function-level ones included).

*core* (every package outside ``runtime`` and ``tools``) imports neither of them, *runtime* does not import
*tools*, and no two packages import each other, directly or round a longer loop. A failure names the file and
line of each offending import.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import strokeseg

SRC = Path(strokeseg.__file__).parent
FLOORS = {"core": 0, "runtime": 1, "tools": 2}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` of every ``strokeseg`` import in ``path``, relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # ``from strokeseg.x import y``: y may be a module of its own
                sub = f"{target}.{alias.name}"
                found.append((sub if _exists(sub) else target, node.lineno))
    return [(name, line) for name, line in found if name == "strokeseg" or name.startswith("strokeseg.")]


def _exists(module: str) -> bool:
    rel = Path(*module.split(".")[1:])
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def package_of(module: str) -> str:
    """The unit whose cycles count: ``strokeseg.<top>`` for core and runtime, ``strokeseg.tools.<sub>`` in tools."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "tools":
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def floor_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("runtime", "tools") else "core"


def import_edges() -> list[tuple[str, str, str]]:
    """``(importing module, imported module, "file:line")`` over all of ``src/strokeseg``."""
    edges = []
    for path in sorted(SRC.rglob("*.py")):
        for target, line in _imports(path):
            edges.append((_module_name(path), target, f"{path.relative_to(SRC.parent)}:{line}"))
    return edges


def package_cycles(edges: list[tuple[str, str, str]]) -> list[list[str]]:
    """Strongly connected sets of more than one package (Tarjan), each sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target, _ in edges:
        a, b = package_of(source), package_of(target)
        if a != b and target != "strokeseg":
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                group.append(item)
                if item == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_upward_import():
    upward = [
        f"{where}: {source} ({floor_of(source)}) imports {target} ({floor_of(target)})"
        for source, target, where in import_edges()
        if FLOORS[floor_of(target)] > FLOORS[floor_of(source)]
    ]
    assert upward == []


def test_no_cycle_between_packages():
    edges = import_edges()
    cycles = package_cycles(edges)
    detail = [
        f"{where}: {s} -> {t}"
        for cycle in cycles
        for s, t, where in edges
        if package_of(s) in cycle and package_of(t) in cycle and package_of(s) != package_of(t)
    ]
    assert cycles == [], "\n".join(detail)


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path):
    """The checks above would catch what they look for: a nested import and a two-package loop."""
    edges = [
        ("strokeseg.metrics.report", "strokeseg.fitting.closing", "a:1"),
        ("strokeseg.fitting.closing", "strokeseg.metrics.voxelwise", "b:2"),
        ("strokeseg.tools.cli", "strokeseg.tools.bench.runner", "c:3"),
    ]
    assert package_cycles(edges) == [["strokeseg.fitting", "strokeseg.metrics"]]
    assert floor_of("strokeseg.runtime.precision") == "runtime" and floor_of("strokeseg.naming") == "core"
    nested = tmp_path / "mod.py"
    nested.write_text("def f():\n    from strokeseg.tools import cli\n")
    tree = ast.parse(nested.read_text())
    assert any(isinstance(n, ast.ImportFrom) and n.module == "strokeseg.tools" for n in ast.walk(tree))


def test_no_module_over_500_lines():
    long = {
        str(p.relative_to(SRC.parent)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert long == {}
