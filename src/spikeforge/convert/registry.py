"""The recipe registry: every recipe file registers its ``recipe(ann, calibration_data=None, **options) -> snn``
in its own file (``spikeforge convert --recipe NAME`` and the benchmark list them).

Registry meta: ``neuron`` (the ANN twin's activation the recipe needs: ``clip``, ``qcfs``; default ``relu``),
``labelled`` (needs ``(x, y)`` calibration data), ``takes`` (a trained method's network instead of an ANN),
``smoke`` (options that make the generated test's run tiny)."""

from __future__ import annotations

from dataclasses import fields

from .._registry import Registry
from .config import ConversionConfig

RECIPES = Registry("recipe")


def make_config(recipe: str, defaults: dict, options: dict, extra=()) -> tuple[ConversionConfig, dict]:
    """``(ConversionConfig(defaults | options), the options that are the recipe's own)``; an option that is
    neither a ConversionConfig field nor in ``extra`` raises one ValueError naming it and the valid ones."""
    names = {f.name for f in fields(ConversionConfig)}
    own = {k: v for k, v in options.items() if k not in names}
    for k in own:
        if k not in extra:
            raise ValueError(f"{k}: unknown option of recipe {recipe!r}; valid: "
                             f"{', '.join(sorted(names | set(extra)))}")
    kw = dict(defaults)
    kw.update({k: v for k, v in options.items() if k in names})
    return ConversionConfig(**kw), own


def convert_with(name: str, ann, calibration_data=None, **options):
    """Run recipe ``name`` (see ``RECIPES.list()``)."""
    return RECIPES.create(name, ann, calibration_data, **options)


__all__ = ["RECIPES", "make_config", "convert_with"]
