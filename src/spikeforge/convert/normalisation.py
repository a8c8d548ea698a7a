r"""Normalisation recipes: where each IF threshold :math:`\theta_l` comes from (Diehl et al. 2015; Rueckauer et
al. 2017; Kim et al. 2020 for channel-wise).  With :math:`a_l` the ANN activations on the calibration data:

- ``maxnorm``: :math:`\theta_l = \max a_l` per layer, a max pool over each step's spikes: the classic baseline.
- ``percentile``: :math:`\theta_l = P_p(a_l)`, ``percentile`` p = 99.99 (robust normalisation; 99.9 is the other
  usual choice), LIPool.
- ``channelwise``: :math:`\theta_{l,c} = P_p(a_{l,c})` per channel, p = 99.99, LIPool.

Every recipe takes any :class:`~spikeforge.convert.ConversionConfig` field as an option, e.g. ``v_init=0.5``
(the :math:`\theta/2` initial membrane, which centres the rounding error of the rate code).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.convert.registry import convert_with
    >>> ann = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> snn = convert_with("percentile", ann, torch.rand(64, 8), percentile=99.9, v_init=0.5, T=16)
    >>> snn.T
    16
"""

from __future__ import annotations

from .core import convert
from .registry import RECIPES, make_config


def _recipe(name, defaults):
    def recipe(ann, calibration_data=None, **options):
        cfg, _ = make_config(name, defaults, options)
        return convert(ann, cfg, calibration_data)

    recipe.__name__ = name
    return recipe


maxnorm = _recipe("maxnorm", {"norm": "max", "maxpool": "spiking"})
percentile = _recipe("percentile", {"norm": "percentile", "percentile": 99.99})
channelwise = _recipe("channelwise", {"norm": "percentile", "percentile": 99.99, "per_channel": True})

RECIPES.register("maxnorm", help="layer-wise max normalisation, spiking max pool (Diehl et al. 2015)")(maxnorm)
RECIPES.register("percentile", help="p-th percentile normalisation, p=99.99 (Rueckauer et al. 2017)")(percentile)
RECIPES.register("channelwise", help="per-channel 99.99th percentile normalisation (Kim et al. 2020)")(channelwise)

__all__ = ["maxnorm", "percentile", "channelwise"]
