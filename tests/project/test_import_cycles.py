"""No import cycles among the tool's modules (analysis, landscape, orchestrator, workloads), and no module
using another's private (``_``-prefixed) names.

Every import counts, also one inside a function: a lazy import hides a cycle from the interpreter, not from a
reader, who must still know both modules to change either. A module importing its own package (its parent's
__init__) is how Python imports any submodule and is not an edge.

A leading underscore says "only this module uses it", so its owner may change it freely; a second module reaching
for it breaks that promise silently. What two modules share gets a public name.

Likewise no test file imports another test_*.py: what tests share lives in tests/helpers.py (fixtures in
tests/conftest.py).
"""

import ast
import pathlib
from tests.helpers import REPO_ROOT

ROOT = pathlib.Path(REPO_ROOT)
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


def _package_of(module: str, path: pathlib.Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _from_base(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` reads from."""
    base = node.module or ""
    if node.level:  # relative: from the package, up level - 1 packages
        anchor = package
        for _ in range(node.level - 1):
            anchor = anchor.rpartition(".")[0]
        base = f"{anchor}.{base}" if base else anchor
    return base


def _imported_names(module: str, path: pathlib.Path) -> set[str]:
    package = _package_of(module, path)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, package)
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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))  # dunders are public


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, None for anything else (a call, a subscript)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def private_uses(modules: dict[str, pathlib.Path]) -> list[str]:
    """Where a module of ``modules`` uses another one's private name, as ``module:line: target._name``.

    Seen: ``from target import _name`` (relative too), and ``target._name`` read off a module bound by an import
    (``import pkg.target as t; t._name``, ``from pkg import target; target._name``, ``pkg.target._name``). Not
    seen: a module reached another way (passed as an argument, getattr with a string).
    """
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = _package_of(module, path)
        bound = {}  # local name -> the module of `modules` (or package prefix) it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:  # `import a.b.c` binds `a`; the dotted chain is resolved at the use
                        top = alias.name.partition(".")[0]
                        bound[top] = top
            elif isinstance(node, ast.ImportFrom):
                base = _from_base(node, package)
                owner = _owning_module(base, modules)
                for alias in node.names:
                    if owner and owner != module and _is_private(alias.name):
                        found.append(f"{module}:{node.lineno}: {base}.{alias.name}")
                    elif f"{base}.{alias.name}" in modules:  # a submodule, used as `name._x` below
                        bound[alias.asname or alias.name] = f"{base}.{alias.name}"
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            chain = _dotted(node.value)
            if chain is None:
                continue
            head, _, rest = chain.partition(".")
            if head not in bound:
                continue
            target = f"{bound[head]}.{rest}" if rest else bound[head]
            if target in modules and target != module:
                found.append(f"{module}:{node.lineno}: {target}.{node.attr}")
    return sorted(set(found))


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
    assert "workloads.cohort_experiment" in graph["orchestrator.worker.trainable"]  # imported inside a function
    assert graph["landscape"] >= {"landscape.results", "landscape.sweeps"}


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (move what both need into a module of its own): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_the_private_name_finder_finds_each_kind(tmp_path):
    (tmp_path / "pkg").mkdir()
    files = {"pkg": "", "pkg.owner": "_secret = 1\n__version__ = '1'\n",
             "pkg.user": ("from pkg.owner import _secret, __version__\n"
                          "from .owner import _secret as hidden\n"
                          "import pkg.owner\nimport pkg.owner as o\nfrom pkg import owner\n"
                          "a = pkg.owner._secret\nb = o._secret\nc = owner._secret\nd = o.__version__\n"),
             "pkg.self": "_mine = 1\nimport pkg.self as me\nx = me._mine\n"}
    modules = {}
    for name, text in files.items():
        path = tmp_path.joinpath(*name.split("."), "__init__.py") if name == "pkg" else \
            tmp_path.joinpath(*name.split(".")).with_suffix(".py")
        path.write_text(text)
        modules[name] = path
    assert private_uses(modules) == [f"pkg.user:{n}: pkg.owner._secret" for n in (1, 2, 6, 7, 8)]


def test_no_module_uses_another_modules_private_names():
    found = private_uses(module_files())
    assert not found, ("private names used across modules (give each a public name in its module, and use "
                       "that):\n" + "\n".join(found))


def imported_test_modules(path: pathlib.Path, package: str = "tests") -> list[str]:
    """The test_*.py modules that ``path`` (a module of ``package``, e.g. tests.cli) imports, in any folder of
    tests/, as ``file:line: tests.cli.test_x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package, or one above per extra dot
                parent = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [f"{path.name}:{node.lineno}: {n}" for n in names
                  if n.startswith("tests.") and n.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_the_test_import_finder_finds_each_kind(tmp_path):
    planted = tmp_path / "test_x.py"
    planted.write_text("import tests.test_a\nfrom tests.cli.test_b import f\nfrom tests.driver import test_c, state\n"
                       "from .test_d import g\nfrom . import test_e\nfrom ..workloads import test_f\n"
                       "from tests.helpers import h\n")
    assert imported_test_modules(planted, "tests.cli") == [
        "test_x.py:1: tests.test_a", "test_x.py:2: tests.cli.test_b", "test_x.py:3: tests.driver.test_c",
        "test_x.py:4: tests.cli.test_d", "test_x.py:5: tests.cli.test_e", "test_x.py:6: tests.workloads.test_f"]


def test_no_test_file_imports_another():
    """What two test files share lives in tests/helpers.py (fixtures: tests/conftest.py), not in one of them."""
    found = [line for path in sorted((ROOT / "tests").rglob("*.py"))
             for line in imported_test_modules(path, ".".join(path.relative_to(ROOT).parent.parts))]
    assert not found, "test files importing another test file (move what they share into tests/helpers.py):\n" + \
        "\n".join(found)
