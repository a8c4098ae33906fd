"""A tiny name -> builder registry with "did you mean" errors.

Datasets and models are chosen by name in sweep configs, so a typo must fail early with a message that
names the close matches and every known name, instead of a bare ``KeyError: 'resnet81'``.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)

# difflib similarity ratio above which a known name is offered as a suggestion (0.6 is difflib's default;
# it catches one or two wrong/missing characters in names of 5-8 characters).
SUGGESTION_CUTOFF = 0.6
MAX_SUGGESTIONS = 3


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered.

    Subclasses KeyError (so ``except LookupError`` works) and ValueError (it is a bad argument value).
    KeyError's own ``str`` is the repr of its argument; this class prints the readable message instead.
    """

    def __init__(self, kind: str, name: str, known: list[str], suggestions: list[str]):
        self.kind = kind
        self.name = name
        self.known = list(known)
        self.suggestions = list(suggestions)
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"unknown {self.kind} {self.name!r}"
        if self.suggestions:
            text += "; did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?"
        else:
            text += "."
        known = ", ".join(self.known) if self.known else "(none registered)"
        return f"{text} Known {self.kind} names: {known}"

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self):
        # Pickling rebuilds an exception as cls(*args); args holds only the message here, so a worker's error
        # would arrive at the driver as "TypeError: __init__() missing 3 required positional arguments".
        return (type(self), (self.kind, self.name, self.known, self.suggestions))


def close_matches(name: str, known: list[str]) -> list[str]:
    """Known names similar to ``name``, best first; comparison ignores case ("CIFAR10" -> "cifar10")."""
    by_lower = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(str(name).lower(), list(by_lower), n=MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF)
    return [by_lower[h] for h in hits]


class Registry:
    """Maps names to callables.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("mlp")
    ... def build_mlp(**kw): ...
    >>> MODELS.get("mlp") is build_mlp
    True
    """

    def __init__(self, kind: str):
        self.kind = kind  # used in error messages: "unknown model 'resnet81'"
        self._entries: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``fn`` under ``name``; registering a name twice is a ValueError."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")

        def decorator(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._entries[name]!r})")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> Callable:
        """The callable registered as ``name``; UnknownNameError with suggestions otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: unhashable name such as a list
            known = self.names()
            raise UnknownNameError(self.kind, name, known, close_matches(str(name), known)) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
