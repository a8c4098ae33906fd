"""No import cycles among the tool's modules (analysis, landscape, orchestrator, workloads).

Every import counts, also one inside a function: a lazy import hides a cycle from the interpreter, not from a
reader, who must still know both modules to change either. A module importing its own package (its parent's
__init__) is how Python imports any submodule and is not an edge.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "landscape", "orchestrator", "workloads")


def module_files() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package by its __init__.py)."""
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _owning_module(name: str, modules) -> str | None:
    """The module an imported dotted name lives in (``pkg.mod.func`` -> ``pkg.mod``), None outside PACKAGES."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(module: str, path: pathlib.Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of PACKAGES it imports (anywhere in it), without itself and its parent packages."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        parents = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
        targets = {_owning_module(name, modules) for name in _imported_names(module, path)}
        graph[module] = {t for t in targets if t and t != module and t not in parents}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "orchestrator.cohort_jobs" in graph["orchestrator.worker"]  # imported inside a function
    assert graph["landscape"] >= {"landscape.results", "landscape.sweeps"}


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (move what both need into a module of its own): " + "; ".join(
        " <-> ".join(c) for c in found)
