"""The shape of the code: layers one way, no import cycles, serving free of training jobs.

Read from the source with `ast` (nothing is imported), so the rules hold for every module,
including ones no other test loads:

- governance <- features <- training <- serving: a package imports only from its own layer or
  the layers below it (benchmarks and the `cartwise` command sit on top and may import all).
- serving imports from training only what serving needs (training.bundles and the model
  definitions it loads), never a training job, not even through another module.
- the project's module import graph has no cycle.
- a project import sits at the top of its module; an import inside a function is for a heavy
  library only and says why in a comment.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"governance": 0, "features": 1, "training": 2, "serving": 3}
PACKAGES = (*LAYERS, "benchmarks", "cartwise")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _resolve(name: str) -> str | None:
    """The project module `name` refers to (a symbol's module for `from m import symbol`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {r for a in node.names if (r := _resolve(a.name))}
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    out = set()
    for alias in node.names:
        # `from pkg import submodule` depends on the submodule, not on the package's __init__.
        target = _resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else None
        out.add(target or _resolve(base))
    return {t for t in out if t}


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[module] |= _imported(module, node) - {module}
    return edges


GRAPH = _graph()


def _is_job(module: str) -> bool:
    """A job is a program: it has a `main` or an `if __name__ == "__main__"` block."""
    tree = TREES[module]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return True
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return module.endswith("__main__")


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_sees_the_project():
    assert len(MODULES) > 60
    assert "training.bundles" in GRAPH["serving.app"]
    assert _is_job("training.ranker") and not _is_job("training.bundles")


def test_layers_point_one_way():
    upward = [
        f"{a} -> {b}"
        for a, targets in GRAPH.items()
        for b in targets
        if a.split(".")[0] in LAYERS
        and b.split(".")[0] in LAYERS
        and LAYERS[b.split(".")[0]] > LAYERS[a.split(".")[0]]
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))


def test_serving_imports_no_training_job():
    bad = []
    for module in MODULES:
        if module.split(".")[0] != "serving":
            continue
        jobs = {m for m in _reachable(module) if m.startswith("training.") and _is_job(m)}
        bad += [f"{module} reaches {job}" for job in sorted(jobs)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(MODULES):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_inside_functions_are_heavy_and_say_why():
    bad = []
    for module, tree in TREES.items():
        lines = MODULES[module].read_text().splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                # Say why on the line, or in a comment right above it (or above the block of
                # imports it belongs to).
                above, i = [], node.lineno - 2
                while i >= 0 and lines[i].strip().startswith(("#", "from ", "import ")):
                    above += [lines[i]] if lines[i].strip().startswith("#") else []
                    i -= 1
                if "#" not in lines[node.lineno - 1] and not above:
                    bad.append(f"{MODULES[module].relative_to(ROOT)}:{node.lineno}")
    assert not bad, "imports inside functions without a comment saying why:\n" + "\n".join(bad)
