"""The shape of the shipped code (docs/layout.md): read from its source, never imported.

Modules form layers: `metrics/` (the scorers, standard library only) below `qakit/` below the top-level files
(`squad_v2.py`, `utils_qa.py`, `trainer_qa.py`, `qa.py`, `plot_run.py`). No module imports another's private
names, no import cycle exists between modules or between the layers, no shipped file edits `sys.path`, no
function is longer than 60 lines, and `qa.py` (the flags and the pipeline) stays under 350 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

TOP_LEVEL = ["qa.py", "squad_v2.py", "utils_qa.py", "trainer_qa.py", "plot_run.py"]
MAX_FUNCTION_LINES = 60


def shipped() -> dict[str, Path]:
    """Dotted module name -> file, for every shipped Python file."""
    files = [REPO / name for name in TOP_LEVEL] + sorted((REPO / "qakit").glob("*.py")) + \
        sorted((REPO / "metrics").rglob("*.py"))
    return {".".join(p.relative_to(REPO).with_suffix("").parts): p for p in files}


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, list[str]]]:
    """(imported project module, names taken from it) for every import statement, at any depth, including the
    script-style imports a scorer makes when run as a file (`import squad_common` beside it)."""
    package = module.rsplit(".", 1)[0] if "." in module else ""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                for name in (alias.name, f"{package}.{alias.name}"):
                    if name in known:
                        found.append((name, []))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[:-node.level]
                base = ".".join([*parts, base] if base else parts)
            names = [a.name for a in node.names]
            for name in names:  # `from qakit import plots` imports the module qakit.plots
                if f"{base}.{name}" in known:
                    found.append((f"{base}.{name}", []))
            if base in known:
                found.append((base, names))
    return found


def layer(module: str) -> int:
    return 0 if module.startswith("metrics.") else 1 if module.startswith("qakit.") else 2


def test_imports_follow_the_layers_without_cycles_or_private_names():
    modules = shipped()
    known = set(modules)
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names in imports(module, path, known):
            if target == module:
                continue
            graph[module].add(target)
            assert layer(target) <= layer(module), f"{module} imports {target}, a layer above it"
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            assert not private, f"{module} imports private names {private} from {target}"
    assert {"qakit.heads", "qakit.answers"} <= graph["utils_qa"] | graph["trainer_qa"] | graph["qakit.heads"]
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph as a path that ends where it starts, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_shipped_file_edits_sys_path():
    for module, path in shipped().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("append", "insert", "extend") and \
                    isinstance(node.value, ast.Attribute) and node.value.attr == "path" and \
                    isinstance(node.value.value, ast.Name) and node.value.value.id == "sys":
                raise AssertionError(f"{module} line {node.lineno} edits sys.path")


def test_functions_are_short_and_qa_py_is_the_pipeline():
    long = []
    for module, path in shipped().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name} ({lines} lines)")
    assert not long, long
    assert len((REPO / "qa.py").read_text(encoding="utf-8").splitlines()) < 350
