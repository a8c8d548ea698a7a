"""``spikeforge models [--details]``: list registered models; ``--details`` adds parameter counts (default config)
and the constructor's options.

Example:
    >>> from spikeforge.models.cli import count_parameters
    >>> count_parameters("sew_resnet18")
    11689512
"""

from __future__ import annotations


def count_parameters(name: str, **kwargs) -> int:
    """Parameters of model ``name`` at its default config (registry meta ``defaults``, overridden by kwargs)."""
    import torch

    from . import MODELS, create_model

    kw = {**MODELS.get(name).meta.get("defaults", {}), **kwargs}
    with torch.no_grad():
        model = create_model(name, **kw)
    return sum(p.numel() for p in model.parameters())


def _run(args) -> int:
    from . import MODELS

    names = MODELS.list()
    if args.name:
        MODELS.get(args.name)  # unknown name -> ValueError listing the available ones
        names = [args.name.lower()]
    for name in names:
        d = MODELS.describe(name)
        if not args.details:
            print(f"{name:<18} {d['help']}")
            continue
        defaults = d.get("defaults", {})
        n = count_parameters(name)
        cfg = ", ".join(f"{k}={v}" for k, v in defaults.items())
        print(f"{name:<18} {n / 1e6:8.2f}M params ({n:,}; {cfg})  {d['help']}")
        skip = {"num_classes", "in_channels"}
        opts = ", ".join(f"{k}={v!r}" for k, v in d["params"].items() if k not in skip)
        print(f"{'':<18} {opts}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models (--details: parameter counts and options)")
    p.add_argument("name", nargs="?", default=None, help="show only this model")
    p.add_argument("--details", action="store_true", help="parameter counts for the default config, options")
    p.set_defaults(func=_run)
