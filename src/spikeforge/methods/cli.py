"""``spikeforge methods``: list every registered training method, its card and its options."""

from __future__ import annotations

import dataclasses


def _run(args) -> int:
    from . import METHODS

    for name in METHODS.list():
        cls = METHODS.get(name).factory
        opts = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Config))
        card = f"  [card: {cls.card}]" if cls.card else ""
        print(f"{name:<18} {METHODS.get(name).help}{card}")
        if opts:
            print(f"{'':<18} {opts}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("methods", help="list training methods (method.name), their cards and options")
    p.set_defaults(func=_run)
