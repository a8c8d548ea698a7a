r"""Spiking (hybrid) Legendre Memory Unit for sequence tasks such as sequential / permuted MNIST
(Voelker, Kajić & Eliasmith, NeurIPS 2019; hybrid spiking version: Voelker, Rasmussen & Eliasmith 2020, card
``hybrid-spiking-lmu.md``).

Memory (linear, never spiking) and hidden state, per step t:

.. math::
    u_t = e_x^\top x_t + e_h^\top h_{t-1} + e_m^\top m_{t-1},\qquad m_t = \bar A m_{t-1} + \bar B u_t,\qquad
    h_t = Q(W_x x_t + W_h h_{t-1} + W_m m_t)

:math:`(\bar A, \bar B)` is the zero-order-hold discretisation (step 1) of the Legendre delay system
:math:`\theta\,\dot m = A m + B u` with :math:`A_{ij} = (2i+1)(-1 \text{ if } i<j \text{ else } (-1)^{i-j+1})`,
:math:`B_i = (2i+1)(-1)^i` (order ``order`` = d, window ``theta``).  :math:`Q` is the configured neuron run
step by step with its state carried: with ``neuron="sigma_delta"`` it is the paper's quantised ReLU with
temporally diffused error (gain ``omega`` in ``neuron_kwargs``; large omega = non-spiking); any other registered
neuron with a ``step`` works too (e.g. LIF spikes).  The readout is linear on :math:`h_t`.

Input: an image ``[B, C, H, W]`` is read pixel by pixel in raster order (``H*W`` steps of ``C`` features;
``permute=True`` applies one fixed random permutation drawn from ``seed`` — psMNIST; ``pool=k`` first averages
k x k pixel blocks, so a 28x28 image becomes (28/k)^2 steps — a small psMNIST; ``T`` plays no part), or
a time-major sequence ``[T, B, F]`` of ``T`` steps with ``F = in_channels``.  ``output="last"`` (default)
returns the prediction after the last step as ``[1, B, num_classes]`` (so ``mean(0)`` is it); ``output="all"``
returns every step ``[T, B, num_classes]``.
The original psMNIST LMU: order 256, theta 784, 212 hidden units (tanh); ``e_h`` and ``e_m`` start at zero.

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("lmu", num_classes=10, in_channels=1, neuron="sigma_delta",
    ...                    neuron_kwargs={"omega": 8.0}, input_size=6, order=8, theta=36, hidden=16)
    >>> tuple(net(torch.rand(2, 1, 6, 6)).shape)
    (1, 2, 10)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._common import NeuronFactory, check_choice
from .base import SpikingModel
from .registry import MODELS


def legendre_delay_system(order: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ZOH-discretised (step 1) Legendre delay system ``(Abar [d, d], Bbar [d])`` in float64.

    Example:
        >>> Abar, Bbar = legendre_delay_system(4, 10.0)
        >>> tuple(Abar.shape), tuple(Bbar.shape)
        ((4, 4), (4,))
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order: expected an integer >= 1 (memory dimensions d), got {order!r}")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0 or not math.isfinite(theta):
        raise ValueError(f"theta: expected a window length > 0 (in steps), got {theta!r}")
    i = torch.arange(order, dtype=torch.float64)
    q = (2 * i + 1)[:, None]
    ii, jj = i[:, None], i[None, :]
    A = q * torch.where(ii < jj, torch.full_like(ii * jj, -1.0), (-1.0) ** (ii - jj + 1))
    B = (2 * i + 1) * (-1.0) ** i
    M = torch.zeros(order + 1, order + 1, dtype=torch.float64)
    M[:order, :order] = A / theta
    M[:order, order] = B / theta
    E = torch.linalg.matrix_exp(M)
    return E[:order, :order].contiguous(), E[:order, order].contiguous()


class SpikingLMU(SpikingModel):
    """LMU with a linear memory and a spiking / quantised hidden layer; linear readout."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 784, input_size: int = 28, order: int = 256,
                 theta: float | None = None, hidden: int = 212, permute: bool = False, seed: int = 0,
                 output: str = "last", encoder: str = "direct", pool: int = 1):
        super().__init__(num_classes, in_channels, T, encoder)
        check_choice("output", output, ("last", "all"))
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
            raise ValueError(f"input_size: expected an integer >= 1 (image side), got {input_size!r}")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden: expected an integer >= 1, got {hidden!r}")
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1 or input_size % pool:
            raise ValueError(f"pool: expected an integer >= 1 that divides input_size={input_size}, got {pool!r}")
        self.pool = pool
        side = input_size // pool
        theta = float(side * side if theta is None else theta)
        Abar, Bbar = legendre_delay_system(order, theta)
        self.register_buffer("Abar", Abar.float(), persistent=False)
        self.register_buffer("Bbar", Bbar.float(), persistent=False)
        n_pix = side * side
        perm = torch.randperm(n_pix, generator=torch.Generator().manual_seed(int(seed))) if permute \
            else torch.arange(n_pix)
        self.register_buffer("perm", perm, persistent=False)
        self.order, self.theta, self.hidden, self.input_size = order, theta, hidden, input_size
        self.output, self.permute = output, bool(permute)
        self.e_x = nn.Linear(in_channels, 1, bias=False)
        self.e_h = nn.Linear(hidden, 1, bias=False)
        self.e_m = nn.Linear(order, 1, bias=False)
        nn.init.zeros_(self.e_h.weight)
        nn.init.zeros_(self.e_m.weight)
        self.W_x = nn.Linear(in_channels, hidden)
        self.W_h = nn.Linear(hidden, hidden, bias=False)
        self.W_m = nn.Linear(order, hidden, bias=False)
        self.sn = NeuronFactory(neuron, neuron_kwargs)()
        if not callable(getattr(self.sn, "step", None)):
            raise ValueError(f"neuron: the LMU runs its neuron step by step; {neuron!r} has no .step")
        self.readout = nn.Linear(hidden, num_classes)

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        layouts = "an image [B, C, H, W] (read pixel by pixel) or a sequence [T, B, F]"
        if not torch.is_tensor(x) or x.dim() not in (3, 4):
            raise ValueError(f"x: expected {layouts}, got shape {tuple(getattr(x, 'shape', ()))}")
        if not x.is_floating_point():
            x = x.float()
        ch = x.shape[1] if x.dim() == 4 else x.shape[2]
        if ch != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} input channels/features ({layouts}), got {ch} in "
                             f"shape {tuple(x.shape)}")
        if x.dim() == 3:
            self.check_steps(x, "[T, B, F]")
            return x
        if tuple(x.shape[2:]) != (self.input_size, self.input_size):
            raise ValueError(f"x: expected {self.input_size}x{self.input_size} images (input_size), got "
                             f"{tuple(x.shape[2:])}")
        if self.pool > 1:
            x = torch.nn.functional.avg_pool2d(x, self.pool)
        seq = x.flatten(2).permute(2, 0, 1)                       # [H*W, B, C]
        return seq[self.perm] if self.permute else seq

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        T, B = x_seq.shape[:2]
        dt = x_seq.dtype
        Abar_t, Bbar = self.Abar.to(dt).t(), self.Bbar.to(dt)
        ux = self.e_x(x_seq)                                      # [T, B, 1]
        hx = self.W_x(x_seq)                                      # [T, B, hidden]
        m = x_seq.new_zeros(B, self.order)
        h = x_seq.new_zeros(B, self.hidden)
        state, hs = None, []
        for t in range(T):
            u = ux[t] + self.e_h(h) + self.e_m(m)                 # [B, 1]
            m = m @ Abar_t + u * Bbar                             # [B, d]
            h, state = self.sn.step(hx[t] + self.W_h(h) + self.W_m(m), state)
            hs.append(h)
        if self.output == "last":
            return self.readout(hs[-1]).unsqueeze(0)
        return self.readout(torch.stack(hs))


MODELS.register("lmu", help="spiking / hybrid Legendre Memory Unit for (permuted) sequential MNIST",
                defaults={"num_classes": 10, "in_channels": 1},
                tiny={"input_size": 4, "order": 4, "hidden": 8}, tiny_input=(1, 4, 4), tiny_step_input=(1,),
                needs_step=True)(SpikingLMU)
