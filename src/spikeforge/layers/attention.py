r"""SCTFA: spatial-channel-temporal-fused attention (Cai et al., TNNLS 2023).

The attention computed from a layer's **previous-step spikes** gates how much membrane carries over:

.. math::
    M_s = \sigma(\mathrm{Conv1x1}_{C\to 1}(s_{t-1})),\quad
    M_c = \sigma(W_2\,\mathrm{ReLU}(W_1\,\mathrm{GAP}(s_{t-1}))),\quad A = M_s \odot M_c

    \tilde u_{t-1} = A \odot u_{t-1},\qquad u_t = \mathrm{decay}\,\tilde u_{t-1}(1 - s_{t-1}) + I_t,\qquad
    s_t = H(u_t - V_{th})

(:math:`W_1: C \to C/r`, :math:`W_2: C/r \to C`, no bias, r = 4).  ``SCTFA(neuron, C)`` wraps any registered
neuron whose ``step`` state is a tensor or has a membrane field ``v`` (or ``u``): before each step t >= 1 the
carried membrane is multiplied by :math:`A(s_{t-1})`; at t = 0 there is nothing to gate.  For neurons that
carry the post-reset membrane (LIF family) this is the card's update exactly; for neurons that carry the
pre-reset membrane and reset at the next step (e.g. GLIF's ``u``) the gate commutes with a hard reset but
not with a soft one (then the gate also scales the subtracted threshold).  With LIF
(``decay_input=False``, ``v_reset=0``, ``1 - 1/tau = decay``) this is exactly the card's update.  Insert it in
any conv block in place of the neuron: ``conv -> BN -> SCTFA(neuron, C)``.  ``mode`` gives the ablation
variants: ``"sctfa"`` (A = M_s M_c), ``"spatial"`` (A = M_s), ``"channel"`` (A = M_c).  The example net's
neuron: decay 0.5, V_th 0.8, ATan alpha 2 — ``SCTFA_LIF_KWARGS`` with ``neuron="lif"``.

Example:
    >>> import torch
    >>> from spikeforge.layers import SCTFA
    >>> from spikeforge.neurons import LIF
    >>> layer = SCTFA(LIF(tau=2.0, decay_input=False), channels=8)
    >>> tuple(layer(torch.rand(4, 2, 8, 6, 6)).shape)
    (4, 2, 8, 6, 6)
"""

from __future__ import annotations

import torch
from torch import nn

#: The SCTFA example's neuron for ``neuron="lif"``: decay 0.5 (tau 2, no input decay), V_th 0.8, hard reset 0.
SCTFA_LIF_KWARGS = {"tau": 2.0, "decay_input": False, "v_threshold": 0.8, "v_reset": 0.0, "surrogate": "atan"}

MODES = ("sctfa", "spatial", "channel")


class SCTFAttention(nn.Module):
    """``A(s) = M_s(s) * M_c(s)`` from spikes ``s [B, C, H, W]`` (shape broadcastable to ``s``)."""

    def __init__(self, channels: int, reduction: int = 4, mode: str = "sctfa"):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels: expected an integer >= 1, got {channels!r}")
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(f"reduction: expected an integer >= 1, got {reduction!r}")
        if mode not in MODES:
            raise ValueError(f"mode: unknown value {mode!r}; available: {', '.join(MODES)}")
        self.channels, self.mode = channels, mode
        hidden = max(1, channels // reduction)
        self.spatial = nn.Conv2d(channels, 1, 1) if mode in ("sctfa", "spatial") else None
        self.channel = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(),
                                     nn.Linear(hidden, channels, bias=False)) if mode in ("sctfa", "channel") \
            else None

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if s.dim() != 4 or s.shape[1] != self.channels:
            raise ValueError(f"s: SCTFA attention expects spikes [B, C={self.channels}, H, W], got shape "
                             f"{tuple(s.shape)}")
        a = None
        if self.spatial is not None:
            a = torch.sigmoid(self.spatial(s))
        if self.channel is not None:
            m_c = torch.sigmoid(self.channel(s.mean(dim=(2, 3))))[:, :, None, None]
            a = m_c if a is None else a * m_c
        return a

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode!r}"


MEMBRANE_FIELDS = ("v", "u")


def gate_state(state, a: torch.Tensor):
    """Multiply the membrane of a neuron state (a tensor, or a NamedTuple with a field ``v`` or ``u``) by ``a``."""
    if torch.is_tensor(state):
        return state * a
    fields = getattr(state, "_fields", ())
    for name in MEMBRANE_FIELDS:
        if name in fields:
            return state._replace(**{name: getattr(state, name) * a})
    raise ValueError(f"state: SCTFA gates the membrane (field 'v' or 'u') of the neuron state, but got a "
                     f"{type(state).__name__} with fields {fields}")


class SCTFA(nn.Module):
    """A neuron whose carried-over membrane is gated by attention on its previous-step spikes."""

    def __init__(self, neuron: nn.Module, channels: int, reduction: int = 4, mode: str = "sctfa"):
        super().__init__()
        if not callable(getattr(neuron, "step", None)):
            raise ValueError(f"neuron: SCTFA runs the neuron step by step and needs a .step method; "
                             f"{type(neuron).__name__} has none")
        self.neuron = neuron
        self.attention = SCTFAttention(channels, reduction, mode)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x_seq) or x_seq.dim() != 5:
            raise ValueError(f"x_seq: SCTFA expects [T, B, C, H, W], got shape {tuple(getattr(x_seq, 'shape', ()))}")
        state, s, out = None, None, []
        for t in range(x_seq.shape[0]):
            if state is not None:
                state = gate_state(state, self.attention(s))
            s, state = self.neuron.step(x_seq[t], state)
            out.append(s)
        return torch.stack(out)
