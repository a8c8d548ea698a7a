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

    def __contains__(self, name: str) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self):
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)
