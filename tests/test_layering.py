"""The layering of the tree, read from the code's own imports (every import statement, also inside functions):
generic layers know no family, families depend on the core and not the other way round, no import cycles
between packages. Entry points (`launcher.py`, `build_trt.py`, `__main__` modules) sit on top and are left out."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from tests.conftest import PROJECT_ROOT

ROOTS = ("engine", "app", "bench", "kernels")
GENERIC = ("engine.core", "engine.backends", "engine.checkpoints", "engine.actions", "engine.memory",
           "engine.recordings", "engine.errors", "kernels")


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package(module: str) -> str:
    """The layer a module belongs to: `engine.families.<name>` for a family, `engine.families` for the registry,
    `engine.<layer>` inside engine, else the top-level folder."""
    parts = module.split(".")
    if parts[0] != "engine" or len(parts) == 1:
        return parts[0]
    if parts[1] == "families":
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def project_imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports (`from x import y` counts x.y where that is a module)."""
    files = [p for root in ROOTS for p in (PROJECT_ROOT / root).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        if name.endswith("__main__"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            edges[name] |= {t for t in targets if t.split(".")[0] in ROOTS}
    return edges


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in project_imports().items():
        for target in targets:
            if package(target) != package(module):
                graph[package(module)].add(package(target))
    return graph


def is_family(pkg: str) -> bool:
    return pkg.startswith("engine.families.")


def test_generic_layers_import_no_family() -> None:
    offenders = sorted(f"{module} -> {target}" for module, targets in project_imports().items()
                       for target in targets if module.startswith(GENERIC) and is_family(package(target)))
    assert not offenders, "generic layers import a family:\n" + "\n".join(offenders)


def test_app_imports_no_family() -> None:
    offenders = sorted(f"{module} -> {target}" for module, targets in project_imports().items()
                       for target in targets if module.startswith("app") and is_family(package(target)))
    assert not offenders, "app imports a family:\n" + "\n".join(offenders)


def test_the_registry_imports_nothing_of_the_project() -> None:
    assert not project_imports().get("engine.families"), "engine.families must name families, not import them"


def test_no_cycles_between_packages() -> None:
    graph = package_graph()
    cycles = []
    for start in sorted(graph):
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not cycles, "import cycles between packages:\n" + "\n".join(sorted(set(cycles)))
