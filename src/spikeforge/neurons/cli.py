"""``spikeforge neurons``: list every registered neuron with its parameters and defaults."""

from __future__ import annotations


def _run(args) -> int:
    from . import NEURONS

    for name in NEURONS.list():
        d = NEURONS.describe(name)
        params = ", ".join(f"{k}={v!r}" for k, v in d["params"].items())
        print(f"{name:<14} {d['help']}")
        print(f"{'':<14} {params}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("neurons", help="list registered neurons, their parameters and defaults")
    p.set_defaults(func=_run)
