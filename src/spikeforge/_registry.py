"""One generic name -> factory registry. Every registry in spikeforge is an instance of :class:`Registry`.

Example:
    >>> from spikeforge._registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("square", help="four equal sides")
    ... def make_square(side=1.0):
    ...     return ("square", side)
    >>> shapes.create("square", side=2.0)
    ('square', 2.0)
    >>> shapes.list()
    ['square']
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    help: str = ""
    meta: dict = field(default_factory=dict)


class Registry:
    """A named collection of factories (classes or functions)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str | None = None, *, help: str = "", **meta):  # noqa: A002 - mirrors argparse
        """Decorator registering ``obj`` under ``name`` (default: its lower-cased ``__name__``)."""

        def deco(obj):
            key = (name or obj.__name__).lower()
            if key in self._entries and self._entries[key].factory is not obj:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            doc = help or (inspect.getdoc(obj) or "").split("\n")[0]
            self._entries[key] = Entry(key, obj, doc, dict(meta))
            return obj

        return deco

    def get(self, name: str) -> Entry:
        if not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a string, got {type(name).__name__}")
        key = name.lower()
        if key not in self._entries:
            raise ValueError(
                f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._entries)) or '(none)'}"
            )
        return self._entries[key]

    def create(self, name: str, *args, **kwargs):
        return self.get(name).factory(*args, **kwargs)

    def list(self) -> list[str]:
        return sorted(self._entries)

    def describe(self, name: str) -> dict:
        """Name, one-line help, metadata and the factory's parameters with their defaults."""
        e = self.get(name)
        params = {}
        try:
            sig = inspect.signature(e.factory)
            for p in sig.parameters.values():
                if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
                    continue
                params[p.name] = None if p.default is inspect.Parameter.empty else p.default
        except (TypeError, ValueError):
            pass
        return {"name": e.name, "help": e.help, "params": params, **e.meta}

    def check_kwargs(self, name: str, kwargs: dict, key: str, exclude=()) -> None:
        """Raise one ValueError naming ``<key>.<option>`` when ``kwargs`` holds a name the factory does not take
        (listing the valid ones, less ``exclude``) or a config-type value (None, bool, int, float, str, list,
        tuple, dict) of the wrong kind, judged from the parameter's annotation or else its default.  Other
        values (tensors, objects) are left to the factory.

        Example:
            >>> shapes = Registry("shape")
            >>> _ = shapes.register("square")(lambda side=1.0: side)
            >>> shapes.check_kwargs("square", {"sied": 2.0}, "shape.kwargs")
            Traceback (most recent call last):
            ...
            ValueError: shape.kwargs.sied: unknown option of shape 'square'; valid: side
        """
        e = self.get(name)
        try:
            params = inspect.signature(e.factory).parameters
        except (TypeError, ValueError):
            return
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
        named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                 and n not in exclude}
        for k, value in kwargs.items():
            p = named.get(k)
            if p is None:
                if open_ended and k not in exclude:
                    continue
                raise ValueError(f"{key}.{k}: unknown option of {self.kind} {e.name!r}; valid: "
                                 f"{', '.join(named) or '(none)'}")
            why = _wrong_kind(p, value)
            if why:
                raise ValueError(f"{key}.{k}: expected {why}, got {value!r} ({type(value).__name__})")

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self):
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)


_CONFIG_TYPES = (type(None), bool, int, float, str, list, tuple, dict)  # what a config file can hold
_KINDS = {  # annotation name -> (accepted types, description, plural)
    "None": ((type(None),), "None", "None"),
    "bool": ((bool,), "True or False", "booleans"),
    "int": ((int,), "an integer", "integers"),
    "float": ((int, float), "a number", "numbers"),
    "str": ((str,), "a string", "strings"),
    "tuple": ((tuple, list), "a list", "lists"),
    "list": ((tuple, list), "a list", "lists"),
    "dict": ((dict,), "a mapping", "mappings"),
}


def _kinds_of(p: inspect.Parameter) -> list[str] | None:
    """The kinds a parameter takes: from its annotation when it is made of plain type names (``int | None``),
    else from its default's type (a default of None says nothing)."""
    names = None
    ann = p.annotation
    if ann is not p.empty:
        text = ann if isinstance(ann, str) else getattr(ann, "__name__", None) or str(ann)
        names = [t.strip() for t in text.split("|")]
        if not all(n in _KINDS for n in names):
            names = None
    d = p.default
    if names is None and d is not p.empty and d is not None:
        names = next(([k] for k, t in (("bool", bool), ("int", int), ("float", float), ("str", str),
                                        ("tuple", (tuple, list)), ("dict", dict)) if isinstance(d, t)), None)
    if names is not None and d is None and "None" not in names:
        names.append("None")
    return names


def _fits(value, kind: str) -> bool:
    types = _KINDS[kind][0]
    return isinstance(value, types) and (kind == "bool" or not isinstance(value, bool))


def _wrong_kind(p: inspect.Parameter, value) -> str | None:
    """What ``p`` expects when ``value`` (of a config type) is not of a kind it takes, else None."""
    if not isinstance(value, _CONFIG_TYPES):
        return None
    kinds = _kinds_of(p)
    if kinds is None:
        return None
    default = "" if p.default is p.empty else f" (default {p.default!r})"
    if not any(_fits(value, k) for k in kinds):
        return " or ".join(_KINDS[k][1] for k in kinds) + default
    d = p.default
    if isinstance(value, (tuple, list)) and isinstance(d, (tuple, list)) and d:
        elem = _kinds_of(inspect.Parameter("item", p.POSITIONAL_OR_KEYWORD, default=d[0]))
        if elem and any(isinstance(v, _CONFIG_TYPES) and not any(_fits(v, k) for k in elem) for v in value):
            return f"a list of {' or '.join(_KINDS[k][2] for k in elem)}{default}"
    return None


def import_submodules(package: str, path, namespace: dict, names: list) -> None:
    """Import every public module of ``package`` (whose ``__path__`` is ``path``), so that what it defines registers
    itself, and export the names in each module's ``__all__`` into ``namespace`` (the package's globals), adding
    them to ``names`` (its ``__all__``): a new neuron's file is picked up without editing the package's
    ``__init__``."""
    import importlib
    import pkgutil

    for m in pkgutil.iter_modules(path):
        if not m.name.startswith("_"):
            mod = importlib.import_module(f"{package}.{m.name}")
            for name in getattr(mod, "__all__", ()):
                namespace[name] = getattr(mod, name)
                if name not in names:
                    names.append(name)
