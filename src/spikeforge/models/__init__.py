"""Model zoo: ``create_model(name, ...)`` and ``list_models()``; families register themselves.

Families (one file each, registered at the bottom of the file): ``small`` (mlp, convnet), ``vgg``,
``resnet`` (spiking ResNet-18/34, ResNet-19, S-ResNet), ``sew_resnet``, ``ms_resnet``, ``dvs`` (event nets),
``sctfa`` (attention net), ``lmu`` (spiking LMU), ``stcsnn`` (STCB net).  ``spikeforge models --details``
lists them with parameter counts.
"""

from . import small  # noqa: F401  (registers mlp, convnet)
from . import dvs, lmu, ms_resnet, resnet, sctfa, sew_resnet, vgg  # noqa: F401  (register their entry points)
from . import stcsnn  # noqa: F401
from . import albsnn  # noqa: F401  (registers albsnn_net)
from . import spike_time  # noqa: F401  (registers bats_mlp, nif_mlp, nif_convnet)
from .base import SpikingModel, make_neuron
from .registry import MODELS, create_model, list_models

__all__ = ["SpikingModel", "make_neuron", "MODELS", "create_model", "list_models"]
