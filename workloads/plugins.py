"""Users' own code in a sweep: models, datasets, metrics and CKA probe makers named by reference.

A sweep config names code in one of three ways (the first that applies wins):

    "mlp"                        a built-in (workloads.models.MODELS, workloads.data.DATASETS, ...)
    "mynets:build"               ``module:attribute`` (also ``pkg.sub:factory.method``): imported from the
                                 directory `landscape` runs in, or from PYTHONPATH / the installed packages
    "fancy-cnn"                  an entry point of the group ``landscape.models`` (``landscape.datasets``,
                                 ``landscape.metrics``, ``landscape.probes``) declared by an installed package

Calling conventions (what the sweep passes; the plug-in returns):

    model    fn(width=int, num_classes=int, input_shape=tuple, **model_args) -> torch.nn.Module
    dataset  fn(root=str | None, seed=int, **dataset_args) -> (train_x, train_y, test_x, test_y) | Dataset
    probes   fn(train_x, num=int, seed=int) -> (num, *input_shape) tensor of CKA probe inputs

Where a ``module:function`` is looked for: ``landscape run`` and ``validate`` (the user's own config) append the
working directory to sys.path (after the tool's own packages and the installed ones), as README documents.
``landscape resume`` continues a run directory whose config.yaml anybody who can write the folder may have
written: it runs inside ``code_from(dirs)``, which never adds the working directory (nor the run directory) on
its own, only the folders the user names (``--code-dir``), after printing which modules it will import.
The read-only commands (status, analyze, plot) run inside ``refusing_user_code``: a lookup there is a
PluginError, never an import. Errors are one ``PluginError`` naming the reference, what was wrong and the fix
(did-you-mean for module files and attributes).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from typing import Callable

from workloads.own_packages import clash

ENTRY_POINT_GROUPS = {
    "model": "landscape.models",
    "dataset": "landscape.datasets",
    "metric": "landscape.metrics",
    "probes": "landscape.probes",
}


class PluginError(ValueError):
    """User code named in a config cannot be found or returned the wrong thing; the message says the fix.

    Only ``args`` are stored (no keyword state), so the exception survives pickling across processes.
    """


def is_reference(name: object) -> bool:
    """Whether ``name`` is a ``module:attribute`` reference (rather than a registered name)."""
    return isinstance(name, str) and ":" in name


def split_reference(reference: str) -> tuple[str, str]:
    """("pkg.module", "attr.path") of ``"pkg.module:attr.path"``; PluginError when malformed."""
    module, _, attribute = reference.partition(":")
    module, attribute = module.strip(), attribute.strip()
    parts_ok = all(p.isidentifier() for p in module.split(".")) and all(p.isidentifier() for p in attribute.split("."))
    if not module or not attribute or not parts_ok:
        raise PluginError(
            f"{reference!r} is not a reference to Python code; write it as 'module:function', e.g. "
            f"'mynets:build' for the function build in mynets.py"
        )
    if clash(module):  # the user's analysis.py can never be imported in place of the tool's (own_packages.py)
        raise PluginError(f"{reference!r}: {clash(module)}")
    return module, attribute


# How this process looks up users' code: "working_directory" (append the cwd to sys.path, `run`'s way), "dirs"
# (the folders code_from added) and "refused" (why no lookup may happen at all: a read-only command), set only by
# the context managers below.
_POLICY = {"working_directory": True, "dirs": (), "refused": None}

# Set by `resume` for the processes that run its jobs (Ray workers, orchestrator/cluster/shipping.py): the folder they must
# not import users' code from. Ray puts the driver's working directory first on every worker's sys.path, so a
# resume run from inside a shared run folder would otherwise import that folder's copy of the user's module there.
NOT_FROM_ENV = "LANDSCAPE_USER_CODE_NOT_FROM"


def worker_environment() -> dict:
    """Environment variables for the sweep's workers that carry this process's lookup rule (empty for `run`):
    inside ``code_from``, the working directory is not a place to import users' code from, unless named."""
    if _POLICY["working_directory"]:
        return {}
    cwd = os.path.abspath(os.getcwd())
    # A folder named with --code-dir is allowed; so is the source tree the tool itself is imported from (its
    # workers import the tool's own modules from there too).
    own_tree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {} if cwd in _POLICY["dirs"] or cwd == own_tree else {NOT_FROM_ENV: cwd}


def _apply_worker_rule() -> None:
    """In a worker of a `resume`: no lookup in the forbidden folder (taken off sys.path, and the cwd not added)."""
    forbidden = os.environ.get(NOT_FROM_ENV)
    if not forbidden:
        return
    _POLICY["working_directory"] = False
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != forbidden]


@contextlib.contextmanager
def code_from(dirs=()):
    """Within: users' modules are found on sys.path as it is (PYTHONPATH, installed packages) and in ``dirs``
    (appended after them), never in the working directory unless it is one of ``dirs``. `landscape resume`."""
    named = tuple(os.path.abspath(d) for d in dirs)
    added = [d for d in dict.fromkeys(named) if d not in sys.path]
    before = dict(_POLICY)
    sys.path.extend(added)
    _POLICY["working_directory"] = False
    _POLICY["dirs"] = named
    try:
        yield
    finally:
        _POLICY.update(before)
        for d in added:
            if d in sys.path:
                sys.path.remove(d)


@contextlib.contextmanager
def refusing_user_code(command: str):
    """Within: any lookup of a ``module:function`` or an entry point raises PluginError instead of importing:
    the read-only commands (``command``) take what they need from the tables and the saved config as data, so
    a path that would still reach a config's code fails loudly rather than running it."""
    before = dict(_POLICY)
    _POLICY["refused"] = command
    try:
        yield
    finally:
        _POLICY.update(before)


def _refuse_if_read_only(kind: str, name: str) -> None:
    if _POLICY["refused"]:
        raise PluginError(f"{kind} {name!r}: `{_POLICY['refused']}` imports no code that a config names (it reads "
                          f"the run directory as data only)")


def module_origin(module_name: str) -> str | None:
    """The file or package folder ``module_name`` would be imported from, without importing it (None if none)."""
    _apply_worker_rule()
    _ensure_cwd_on_path()
    try:
        spec = importlib.util.find_spec(module_name.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:  # a package: its folder
        return list(spec.submodule_search_locations)[0]
    return spec.origin


def _ensure_cwd_on_path() -> None:
    """`landscape` is a console script: unlike `python -m`, it does not put the working directory on sys.path,
    so a user's mynets.py beside their config would not be found. Add it (once, at the end: installed
    packages keep their precedence); not inside ``code_from`` (resume)."""
    if not _POLICY["working_directory"]:
        return
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def load_reference(reference: str, kind: str = "object") -> Callable:
    """The callable named by ``"module:attr"``; PluginError naming what is missing and the closest names."""
    module_name, attribute = split_reference(reference)
    module = import_user_module(reference, kind)
    obj = module
    for i, part in enumerate(attribute.split(".")):
        if not hasattr(obj, part):
            where = module_name + "".join("." + p for p in attribute.split(".")[:i])
            known = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            close = difflib.get_close_matches(part, known, n=1)
            suggestion = f"{module_name}:{'.'.join(attribute.split('.')[:i] + close[:1])}"
            hint = f"; did you mean {suggestion!r}?" if close else ""
            offered = ", ".join(known[:12]) or "none"
            raise PluginError(f"{kind} {reference!r}: {where} has no attribute {part!r}{hint} "
                              f"Callables there: {offered}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{kind} {reference!r} is a {type(obj).__name__}, not a function or class")
    return obj


def import_user_module(reference: str, kind: str = "object"):
    """The module of ``"module:attr"``, imported where this process looks for users' code (see the module doc);
    PluginError when it is not found, raises while imported, or the command imports no user code."""
    module_name, _ = split_reference(reference)
    _refuse_if_read_only(kind, reference)
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names:
        # No model, dataset, metric or probe maker lives there; a config naming it (logging:basicConfig with
        # dataset_args {filename: ..., filemode: w}) would only use the sweep's call to run a library function.
        raise PluginError(f"{kind} {reference!r} names Python's standard library ({top}), not code written for a "
                          f"sweep: name a function of your own module, e.g. 'mynets:build'")
    _apply_worker_rule()
    _ensure_cwd_on_path()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[0] != exc.name.split(".")[0] and not module_name.startswith(exc.name):
            # The user's module exists but itself imports something missing: say that, not "no module".
            raise PluginError(f"{kind} {reference!r}: importing {module_name} failed: {exc}") from None
        if not _POLICY["working_directory"]:
            raise PluginError(
                f"{kind} {reference!r}: no module named {module_name!r} on PYTHONPATH or among the installed "
                f"packages (resume never imports from the working directory or the run directory on its own); "
                f"name the folder holding {module_name.split('.')[0]}.py with --code-dir DIR, or add it to PYTHONPATH"
            ) from None
        raise PluginError(
            f"{kind} {reference!r}: no module named {module_name!r} in {os.getcwd()} or on PYTHONPATH"
            f"{_module_hint(module_name)}; run `landscape` from the folder holding {module_name.split('.')[0]}.py, "
            f"or add that folder to PYTHONPATH"
        ) from None
    except PluginError:
        raise
    except Exception as exc:  # the user's module raised while being imported: its own error, named
        raise PluginError(f"{kind} {reference!r}: importing {module_name} raised {type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:300]}") from None


def _module_hint(module_name: str) -> str:
    """Did-you-mean among the .py files and packages of the working directory."""
    try:
        here = [n[:-3] for n in os.listdir(os.getcwd()) if n.endswith(".py")]
        here += [n for n in os.listdir(os.getcwd()) if os.path.isfile(os.path.join(os.getcwd(), n, "__init__.py"))]
    except OSError:
        return ""
    close = difflib.get_close_matches(module_name.split(".")[0], here, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def entry_point(kind: str, name: str) -> Callable | None:
    """The entry point ``name`` of ``kind``'s group, loaded; None when no installed package declares it."""
    group = ENTRY_POINT_GROUPS[kind]
    matches = [ep for ep in importlib.metadata.entry_points(group=group) if ep.name == name]
    if not matches:
        return None
    _refuse_if_read_only(kind, name)
    # The same distribution can be visible twice (an editable install seen from two environments): the
    # first one on sys.path wins, as Python's own import would decide.
    values = {ep.value for ep in matches}
    if len(values) > 1:
        raise PluginError(f"{kind} {name!r} is declared by several installed packages ({sorted(values)}); "
                          f"name one explicitly as 'module:function'")
    try:
        return matches[0].load()
    except Exception as exc:
        raise PluginError(f"{kind} {name!r} (entry point {matches[0].value} of group {group}) failed to load: "
                          f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None


def entry_point_names(kind: str) -> list[str]:
    """Names installed packages declare in ``kind``'s group, sorted (for did-you-mean lists)."""
    return sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind])})


def accepted_keywords(fn: Callable) -> tuple[set[str], bool]:
    """(names of the keyword parameters ``fn`` takes, whether it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_call(kind: str, reference: str, fn: Callable, required: tuple[str, ...], options: dict) -> None:
    """PluginError when ``fn`` cannot take the arguments the sweep passes: ``required`` plus ``options``."""
    names, var_kw = accepted_keywords(fn)
    if var_kw:
        return
    missing = [r for r in required if r not in names]
    if missing:
        raise PluginError(
            f"{kind} {reference!r} must accept the keyword argument(s) {missing} (the sweep calls it as "
            f"{reference.split(':')[-1]}({', '.join(f'{r}=...' for r in required)}, **{kind}_args)); add them, or **kwargs"
        )
    unknown = sorted(set(options) - names)
    if unknown:
        own = sorted(names - set(required))
        raise PluginError(f"workload.{kind}_args: {reference!r} takes no option(s) {unknown}; its options: "
                          f"{', '.join(own) or 'none'}")


def user_callable(kind: str, name: str, registry) -> Callable | None:
    """The user's function for ``name`` (a ``module:function`` reference or an installed entry point), or None
    when ``name`` is a built-in of ``registry``; PluginError / the registry's UnknownNameError (did-you-mean
    among the built-ins and the installed entry points) when it is none of them."""
    if is_reference(name):
        return load_reference(name, kind)
    if name in registry:
        return None
    fn = entry_point(kind, name)
    if fn is None:
        registry.get(name)  # raises UnknownNameError with the close built-in names (see unknown_name_hint)
    return fn


def unknown_name_hint(kind: str) -> str:
    """What else a name of ``kind`` may be, for an UnknownNameError's message: the installed entry points and
    the user's own code."""
    installed = entry_point_names(kind)
    extra = f"; installed {ENTRY_POINT_GROUPS[kind]} entry points: {', '.join(installed)}" if installed else ""
    return f"{extra}; or name your own code as 'module:function' (e.g. 'mynets:build')"


def call_user(kind: str, name: str, fn: Callable, **kwargs):
    """fn(**kwargs); an exception inside the user's code becomes a PluginError that carries its own type and
    message (one line), so it survives any process boundary and reads as the user's error."""
    try:
        return fn(**kwargs)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(f"{kind} {name!r} raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None
