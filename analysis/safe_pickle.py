"""Load pickles that may hold only plain containers and numpy scalars/arrays, executing nothing else.

A pickle names the callables that rebuild its objects ("globals", e.g. ``os.system``) and the loader calls
them: loading an untrusted pickle can run arbitrary code. The authors' released metrics are pickles, so they
are read through :class:`NumpyOnlyUnpickler`, whose ``find_class`` hands out only numpy's own
reconstruction functions and refuses every other global *before* anything is called.

The released files were checked with ``pickletools``: they use exactly two globals,
``numpy.core.multiarray.scalar`` and ``numpy.dtype``. Array reconstruction is allowed too, so a re-export of
the same data with arrays instead of scalars still loads, and so is ``_codecs.encode`` restricted to latin1,
which protocol-2 pickles use to rebuild the raw bytes of numpy values.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias.
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


# (module, name) as written in the pickle -> the object handed to the loader. Both spellings of the
# multiarray module are accepted: pickles written under numpy 1.x say numpy.core, numpy 2.x says numpy._core.
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED_GLOBALS[(_module, "scalar")] = _multiarray.scalar
    ALLOWED_GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    ALLOWED_GLOBALS[(_module, "_frombuffer")] = _numeric._frombuffer  # arrays in protocol-5 pickles
ALLOWED_GLOBALS[("numpy", "dtype")] = np.dtype
ALLOWED_GLOBALS[("numpy", "ndarray")] = np.ndarray


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Protocol-2 pickles rebuild raw bytes (a numpy scalar's payload) as _codecs.encode(text, 'latin1')."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}: only latin1 rebuilds bytes")
    return text.encode("latin1")


ALLOWED_GLOBALS[("_codecs", "encode")] = _latin1_bytes

_PLAIN = (dict, list, tuple, str, bytes, int, float, bool, type(None), np.generic)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something beyond numpy scalars/arrays; nothing it asked for was executed."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only :data:`ALLOWED_GLOBALS`; ``source`` names the file in errors."""

    def __init__(self, file, *, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's hook
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS))
            raise UnsafePickleError(
                f"refusing to load {self.source}: it asks for the global {module}.{name}, and only numpy "
                f"scalar/array reconstruction is allowed ({allowed}). Nothing was executed. The file is not "
                f"a plain metrics pickle: check where it came from."
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(
            f"refusing to load {self.source}: it uses persistent ids ({pid!r}); nothing was executed"
        )


def load_numpy_pickle(data: bytes, *, source: str):
    """The object pickled in ``data`` (bytes of one pickle), built from allowed globals only.

    Raises UnsafePickleError (naming ``source`` and the refused global) for anything else, and
    pickle.UnpicklingError for a truncated or corrupt file. The result is also checked to hold only plain
    containers, numbers, strings and numpy values without Python objects inside.
    """
    try:
        obj = NumpyOnlyUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated data, bad opcodes, bad reconstruction arguments
        raise pickle.UnpicklingError(f"cannot read {source} as a pickle: {type(exc).__name__}: {exc}") from exc
    _check_plain(obj, source)
    return obj


def _check_plain(obj, source: str) -> None:
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise UnsafePickleError(f"refusing {source}: it holds a numpy array of Python objects")
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif not isinstance(x, _PLAIN):
            raise UnsafePickleError(f"refusing {source}: it holds an object of type {type(x).__name__}")
