"""``noise_single_step``: the deployment step of a network trained with ``method.name=noise_single_step`` (Jiang &
Zhang 2022) as a recipe.  It is the method's own :meth:`~spikeforge.methods.noise_single_step.NoiseSingleStep.finalize`
(one implementation): the trained T = 1 noisy-IF network, noise off, run for ``T`` steps from ``v_init``.  Unlike
the other recipes it takes that trained *spiking* network, not an ANN.

Example:
    >>> from spikeforge.convert.registry import convert_with
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> net = create_method("noise_single_step").prepare(create_model("mlp", T=1, input_size=4, hidden=(8,),
    ...                                                  neuron="if", neuron_kwargs={"v_reset": None}))
    >>> convert_with("noise_single_step", net, T=16).T
    16
"""

from __future__ import annotations

from ..neurons.noisy_if import NoisyIF
from .registry import RECIPES


@RECIPES.register("noise_single_step", takes="noise_single_step",
                  help="deploy a noise-trained single-step IF network at T steps (Jiang & Zhang 2022); takes the "
                       "trained SNN, not an ANN")
def noise_single_step(model, calibration_data=None, *, T: int = 8, v_init: float = 0.5, sigma: float = 0.0):
    from ..methods.noise_single_step import NoiseSingleStep, NoiseSingleStepConfig

    if not any(isinstance(m, NoisyIF) for m in model.modules()):
        raise ValueError(f"ann: noise_single_step deploys a network trained with method.name=noise_single_step "
                         f"(NoisyIF neurons); {type(model).__name__} has none")
    method = NoiseSingleStep(NoiseSingleStepConfig(sigma=sigma, eval_T=T, v_init=v_init))
    return method.finalize(model)


__all__ = ["noise_single_step"]
