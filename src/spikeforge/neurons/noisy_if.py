"""Noisy IF module: IF with soft reset from ``v_init`` plus Gaussian membrane noise in training mode (equations in
:mod:`spikeforge.functional.noisy_if`).  The training method ``noise_single_step`` puts it in place of a model's IF
neurons, trains at T = 1, then runs the network at T = N with ``sigma=0``.

Noise is drawn only in training mode (like dropout); in eval mode, or with ``sigma=0`` (the default), the module
is a deterministic IF neuron started at ``v_init`` (default ``v_threshold / 2``).

Example:
    >>> import torch
    >>> from spikeforge.neurons import NoisyIF
    >>> neuron = NoisyIF(sigma=0.4)
    >>> x = torch.full((1, 20000, 1), 0.4)             # T = 1, many samples of one drive
    >>> rate = neuron(x).mean().item()                  # training mode: E[s] = Phi((0.4 - 0.5) / 0.4) = 0.40
    >>> abs(rate - 0.4013) < 0.02
    True
    >>> neuron.eval()(x).mean().item()                  # eval mode: no noise, 0.4 + 0.5 < 1
    0.0
"""

from __future__ import annotations

from ..functional._checks import check_number
from ..functional.noisy_if import noisy_if
from .base import BaseNeuron
from .registry import NEURONS


class NoisyIF(BaseNeuron):
    """IF neuron (soft reset, membrane starts at ``v_init``) with Gaussian membrane noise ``sigma`` when training."""

    def __init__(self, sigma=0.0, v_threshold=1.0, v_init: float | None = None, detach_reset=False,
                 surrogate="atan", backend="auto", check_inputs=True):
        super().__init__(v_threshold, None, detach_reset, surrogate, backend, check_inputs)
        check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False, allow_tensor=False)
        check_number("sigma", sigma, low=0.0, allow_tensor=False)
        if v_init is not None:
            check_number("v_init", v_init, allow_tensor=False)
        self.sigma = sigma
        self.v_init = v_init

    def _seq(self, x_seq, state, return_v):
        return noisy_if(x_seq, state, sigma=self.sigma if self.training else 0.0, v_threshold=self.v_threshold,
                        v_init=self.v_init, detach_reset=self.detach_reset, surrogate=self.surrogate,
                        backend=self.backend, return_v=return_v, check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, v_init={self.v_init}, " + super().extra_repr()


NEURONS.register("noisy_if", help="IF (soft reset, v0 = v_init) with Gaussian membrane noise when training "
                                  "(Jiang & Zhang 2022, noise-trained single-step SNN)")(NoisyIF)
