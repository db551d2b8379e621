"""noderun's modules form layers: each imports only lower layers (and its own subpackage), every module
has a place in the map below, and no imports go round in a cycle. Read from the source with `ast`,
every import counted, those inside functions too."""

from __future__ import annotations

import ast
import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "noderun"

# Rank of each top-level module or subpackage: a module may import lower ranks only (equal ranks are
# peers that may not import each other), and anything of its own subpackage. A new module needs a line here.
LAYERS = {
    "noderun.errors": 0, "noderun.safeio": 0, "noderun.schema": 0, "noderun.plugins": 1,
    "noderun.records": 1, "noderun.solve": 1, "noderun.command": 1,
    "noderun.regularize": 1.5,  # penalties on a solve's dynamics: above noderun.solve, below noderun.solvers
    "noderun.solvers": 2, "noderun.parallel": 2, "noderun.data": 2, "noderun.loggers": 2,
    "noderun.models": 3,
    "noderun.measure": 4,
    "noderun.plotting": 5, "noderun.train": 5, "noderun.checks": 5,
    "noderun.config": 6,
    "noderun.run": 7,
    "noderun.experiments": 8, "noderun.report": 8,
    "noderun.sweep": 9,
    "noderun.cli": 10,
    "noderun.__main__": 11,  # `python -m noderun`: it only runs noderun.cli, so it sits just above it
}
# noderun/__init__.py sits below everything: importing any noderun module makes Python run it first,
# so it must import none of them.
ROOT_RANK = -1


@dataclass(frozen=True)
class Import:
    """One import statement's edge: `importer` imports `target`, at `file`:`line`."""

    importer: str
    target: str
    file: str
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_files(package_root: Path) -> dict[str, str]:
    """Return each module's dotted name (the package's folder name first) and its file, relative to
    the folder holding the package (as the error messages name it)."""
    modules = {}
    for path in sorted(package_root.rglob("*.py")):
        relative = path.relative_to(package_root.parent)
        parts = relative.with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = relative.as_posix()
    return modules


def import_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """Return the absolute module a `from ... import` statement imports from (relative ones resolved)."""
    if node.level == 0:
        return node.module
    package = (module if is_package else module.rpartition(".")[0]).split(".")
    base = package[: len(package) - (node.level - 1)]  # each dot past the first climbs one package
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """Return the modules an import statement imports: for `from X import Y`, X.Y when that is a
    module, else X (Y is then something defined in X)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = import_base(node, module, is_package)
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def imports_of(module: str, file: str, package_root: Path, known: set[str]) -> list[Import]:
    """Return the module's imports of its own package, at any depth of its code (functions included)."""
    top, path = package_root.name, package_root.parent / file
    found = {}  # an Import once per line, however many names the statement takes from that module
    for node in ast.walk(ast.parse(path.read_text(), filename=file)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in imported_names(node, module, path.name == "__init__.py", known):
                if (target == top or target.startswith(top + ".")) and target != module:
                    found.setdefault(Import(module, target, file, node.lineno))
    return list(found)


def layer_of(module: str, top: str) -> tuple[str, int] | None:
    """Return (the map entry the module belongs to, its rank); None when the map has no place for it."""
    if module == top:
        return top, ROOT_RANK
    for entry, rank in LAYERS.items():
        entry = top + entry[len("noderun"):]
        if module == entry or module.startswith(entry + "."):
            return entry, rank
    return None


def rank_violation(edge: Import, top: str, known: set[str]) -> str | None:
    """Return what is wrong with one import under the layer rules, or None."""
    if edge.target not in known:
        return f"{edge.where()}: imports {edge.target}, which is no module of the package"
    importer, target = layer_of(edge.importer, top), layer_of(edge.target, top)
    if importer is None or target is None or importer[0] == target[0] or target[1] < importer[1]:
        return None  # unmapped modules are reported once each, by unmapped_modules
    kind = "a peer" if target[1] == importer[1] else "a higher layer"
    return (f"{edge.where()}: imports {edge.target} ({target[0]}, rank {target[1]}), {kind} of "
            f"{edge.importer} ({importer[0]}, rank {importer[1]}); import only lower layers")


def unmapped_modules(modules: dict[str, str], top: str) -> list[str]:
    """Return an error for each module the layer map has no place for."""
    return [f"{file}: module {name} is not in the layer map (tests/test_layering.py LAYERS); give it a rank"
            for name, file in modules.items() if layer_of(name, top) is None]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the graph's strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def cycle_through(start: str, graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """Return a shortest cycle [start, ..., start] inside the component (breadth first)."""
    parent, queue = {start: None}, deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node] & component):
            if successor == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if successor not in parent:
                parent[successor] = node
                queue.append(successor)
    raise AssertionError(f"{start} is in a component without a cycle")


def cycle_errors(edges: list[Import]) -> list[str]:
    """Return an error for each group of modules that import each other in a cycle, naming one cycle's imports."""
    graph, first_edge = {}, {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.target)
        graph.setdefault(edge.target, set())
        first_edge.setdefault((edge.importer, edge.target), edge)
    errors = []
    for component in strongly_connected(graph):
        cycle = cycle_through(component[0], graph, set(component))
        steps = [first_edge[pair] for pair in zip(cycle, cycle[1:])]
        errors.append(f"import cycle {' -> '.join(cycle)}: "
                      + "; ".join(f"{s.where()} imports {s.target}" for s in steps))
    return errors


def layering_violations(package_root: Path) -> list[str]:
    """Return every breach of the layer rules in the package at package_root (empty: none).

    Each names the importing file and line and the imported module: upward or peer imports, imports of
    modules that do not exist, modules missing from LAYERS, and import cycles.
    """
    top = package_root.name
    modules = module_files(package_root)
    known = set(modules)
    edges = [edge for name, file in modules.items() for edge in imports_of(name, file, package_root, known)]
    errors = unmapped_modules(modules, top)
    errors += [error for edge in edges if (error := rank_violation(edge, top, known))]
    return errors + cycle_errors([edge for edge in edges if edge.target in known])


def test_noderun_imports_follow_the_layers():
    violations = layering_violations(PACKAGE_ROOT)
    assert not violations, "\n".join(violations)


def append_line(path: Path, line: str) -> int:
    """Append a line of code to the file; return its line number."""
    text = path.read_text()
    text += ("" if text.endswith("\n") or not text else "\n") + line + "\n"
    path.write_text(text)
    return len(text.splitlines())


def test_the_checker_reports_an_upward_import_a_cycle_and_an_unmapped_module(tmp_path):
    copy = tmp_path / "noderun"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = set(layering_violations(copy))
    upward = append_line(copy / "models" / "mlp.py", "from noderun.cli import main")
    (copy / "models" / "cycle_a.py").write_text("from noderun.models import cycle_b\n")
    (copy / "models" / "cycle_b.py").write_text("def late():\n    import noderun.models.cycle_a\n")
    (copy / "unplaced.py").write_text("")
    new = set(layering_violations(copy)) - before
    assert any(e.startswith(f"noderun/models/mlp.py:{upward}: imports noderun.cli ") for e in new), new
    assert ("import cycle noderun.models.cycle_a -> noderun.models.cycle_b -> noderun.models.cycle_a: "
            "noderun/models/cycle_a.py:1 imports noderun.models.cycle_b; "
            "noderun/models/cycle_b.py:2 imports noderun.models.cycle_a") in new, new
    assert any(e.startswith("noderun/unplaced.py: module noderun.unplaced is not in the layer map") for e in new), new


def test_relative_imports_are_resolved_and_peers_may_not_import_each_other(tmp_path):
    package = tmp_path / "noderun"
    (package / "report").mkdir(parents=True)
    (package / "experiments").mkdir()
    for name in ("__init__.py", "errors.py", "report/__init__.py", "experiments/__init__.py"):
        (package / name).write_text("")
    (package / "report" / "figures.py").write_text("from .. import errors\nfrom ..experiments import common\n")
    (package / "experiments" / "common.py").write_text("from ..errors import UserError\n")
    assert layering_violations(package) == [
        "noderun/report/figures.py:2: imports noderun.experiments.common (noderun.experiments, rank 8), a peer of "
        "noderun.report.figures (noderun.report, rank 8); import only lower layers"]
