r"""``tcl``: the trainable clipping bounds :math:`\lambda_l` of an ANN trained with ``model.neuron=clip`` are the IF
thresholds (Ho & Chang, DAC 2021).  No calibration data is needed: the ANN's
:math:`\mathrm{clip}(x, 0, \lambda_l)` becomes :math:`\lambda_l\,\mathrm{IF}(x/\lambda_l)`, whose rate times
:math:`\lambda_l` tends to the clip as T grows (card check 1).  The activation and its PACT gradients (card check
2) are :class:`spikeforge.neurons.Clip`; the :math:`\tfrac{\beta}{2}\sum\lambda_l^2` term is the optimiser's weight
decay.

Example:
    >>> import torch
    >>> from spikeforge.convert.registry import convert_with
    >>> from spikeforge.models import create_model
    >>> ann = create_model("mlp", neuron="clip", neuron_kwargs={"lam": 2.0}, T=1, input_size=4, hidden=(8,))
    >>> snn = convert_with("tcl", ann, T=8)
    >>> float(snn.features[1].theta)
    2.0
"""

from __future__ import annotations

from torch import nn

from ..neurons.activations import ACTIVATIONS, Clip
from .core import convert
from .registry import RECIPES, make_config


def _check_clip(ann: nn.Module, recipe: str, kind=Clip, hint="model.neuron=clip") -> None:
    if not isinstance(ann, nn.Module):
        raise ValueError(f"ann: expected an nn.Module, got {type(ann).__name__}")
    for name, m in ann.named_modules():
        if isinstance(m, ACTIVATIONS) and not isinstance(m, kind):
            raise ValueError(f"ann: {recipe} reads each activation's trained bound, but {name} is "
                             f"{type(m).__name__}; train the ANN with {hint}")


@RECIPES.register("tcl", neuron="clip",
                  help="trainable clipping bounds as thresholds (Ho & Chang 2021); ANN with neuron=clip")
def tcl(ann, calibration_data=None, **options):
    _check_clip(ann, "tcl")
    cfg, _ = make_config("tcl", {"norm": "bound"}, options)
    return convert(ann, cfg, calibration_data)


__all__ = ["tcl"]
