"""The shape of the package, read from its source with `ast` (nothing is imported):
no import cycle among autotag's modules, and the library outside autotag/cli/ never prints."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autotag"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The autotag modules `name` imports anywhere in its file (inside functions too, since a
    cycle through a deferred import is still a cycle in the design)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from its package, one level up per extra dot
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from autotag.x import y`: y may be a module itself
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, set(known)) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checks_see_what_they_check():
    graph = import_graph()
    assert "autotag.analysis.evaluation" in graph["autotag.analysis.report"]
    assert "autotag.analysis.labelling" in graph["autotag.cli.labelled"]  # an import in a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_autotag_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or ())


def test_the_library_never_prints():
    printing = []
    for name, path in modules().items():
        if name == "autotag.cli" or name.startswith("autotag.cli."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        printing += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                     for node in ast.walk(tree)
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                     and node.func.id == "print"]
    assert not printing, "print( outside autotag/cli/ (log instead; commands print): " + \
        ", ".join(printing)


def test_the_search_room_imports_nothing_from_analysis():
    """search/ ranks and keeps its index; the tagging rules it needs are scoring.py's (analysis
    decodes and scores, so it sits above search, not below it)."""
    graph = import_graph()
    room = {name: deps for name, deps in graph.items() if name.startswith("autotag.search")}
    assert {"autotag.search", "autotag.search.vectors", "autotag.search.live"} <= set(room)
    assert not {d for deps in room.values() for d in deps if d.startswith("autotag.analysis")}
