"""LIFB module (rest / regular spike / burst with learnable burst density), its decoupled binary pair, and
:func:`decouple_lifb`, which rewrites a trained model into one with binary LIF units only (equations and the
LOW-confidence note in :mod:`spikeforge.functional.lifb`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.layers import TimeFold
    >>> from spikeforge.neurons import LIFB, decouple_lifb
    >>> net = nn.Sequential(TimeFold(nn.Linear(6, 8)), LIFB(num_channels=8), TimeFold(nn.Linear(8, 3)))
    >>> x = torch.rand(4, 2, 6) * 4
    >>> binary = decouple_lifb(net, x)            # LIFB -> LIFBPair (2 x 8 binary units), Linear(8) -> Linear(16)
    >>> torch.allclose(binary(x), net(x), atol=1e-5)
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..functional.lifb import lifb, lifb_pair
from ._zoo import ZooNeuron, channel_view, check_num_channels, check_number
from .registry import NEURONS


class LIFB(ZooNeuron):
    """LIF-or-burst neuron (Shen et al. 2023): outputs 0, 1 or the learnable burst density ``beta`` (>= 1,
    per layer or per channel with ``num_channels``; clamped to >= 1 in the forward pass)."""

    def __init__(self, num_channels=None, tau=0.5, v_threshold=1.0, burst_threshold=2.0, beta=2.0,
                 learn_beta=True, surrogate="atan", backend="auto", check_inputs=True):
        super().__init__(surrogate, backend, check_inputs)
        self.num_channels = check_num_channels(num_channels)
        check_number("tau", tau, low=0.0, high=1.0, allow_tensor=False)
        check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False, allow_tensor=False)
        check_number("burst_threshold", burst_threshold, low=0.0, low_inclusive=False, allow_tensor=False)
        if burst_threshold <= v_threshold:
            raise ValueError(f"burst_threshold: must be above v_threshold, got burst_threshold={burst_threshold}, "
                             f"v_threshold={v_threshold}")
        check_number("beta", beta, low=1.0, allow_tensor=False)
        self.tau, self.v_threshold, self.burst_threshold = tau, v_threshold, burst_threshold
        b = torch.full(() if num_channels is None else (num_channels,), float(beta))
        self.beta = nn.Parameter(b, requires_grad=bool(learn_beta))

    def beta_value(self) -> torch.Tensor:
        """The burst density used in the forward pass (``beta`` clamped to >= 1)."""
        return self.beta.clamp(min=1.0)

    def _seq(self, x_seq, state, return_v):
        beta = channel_view(self.beta_value(), x_seq, self.num_channels, "LIFB")
        return lifb(x_seq, state, tau=self.tau, v_threshold=self.v_threshold, burst_threshold=self.burst_threshold,
                    beta=beta, surrogate=self.surrogate, backend=self.backend, return_v=return_v,
                    check_inputs=self.check_inputs)

    def extra_repr(self) -> str:
        return (f"num_channels={self.num_channels}, tau={self.tau}, v_threshold={self.v_threshold}, "
                f"burst_threshold={self.burst_threshold}, " + super().extra_repr())


class LIFBPair(nn.Module):
    """The decoupled form of a :class:`LIFB` layer: per neuron a regular and a burst binary LIF unit (shared
    input, self + lateral inhibition).  Output: binary spikes ``cat([s_regular, s_burst], dim=2)`` — channel
    dim of ``[T, B, C, ...]``, so ``2C`` channels; the next layer's weights are ``[W, (beta - 1) W]``."""

    def __init__(self, tau, v_threshold, burst_threshold, beta, num_channels=None, surrogate="atan"):
        super().__init__()
        self.tau, self.v_threshold, self.burst_threshold = tau, v_threshold, burst_threshold
        self.num_channels = num_channels
        self.surrogate = surrogate
        self.register_buffer("beta", torch.as_tensor(beta).detach().clone())

    @classmethod
    def from_lifb(cls, m: LIFB) -> LIFBPair:
        return cls(m.tau, m.v_threshold, m.burst_threshold, m.beta_value(), m.num_channels, m.surrogate)

    def forward(self, x_seq, state=None):
        beta = channel_view(self.beta, x_seq, self.num_channels, "LIFBPair")
        s_r, s_b, st = lifb_pair(x_seq, state, tau=self.tau, v_threshold=self.v_threshold,
                                 burst_threshold=self.burst_threshold, beta=beta, surrogate=self.surrogate)
        out = torch.cat([s_r, s_b], dim=2) if x_seq.dim() >= 3 else torch.stack([s_r, s_b], dim=2)
        return (out, st) if state is not None else out


_PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Flatten, nn.Identity, nn.MaxPool1d,
                 nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                 nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                 nn.AdaptiveMaxPool3d)
_CONSUMERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _set_child(root: nn.Module, qualname: str, new: nn.Module) -> None:
    parent_name, _, attr = qualname.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def _split_weight(layer: nn.Module, beta: torch.Tensor, C: int) -> nn.Module:
    """``layer`` with its input doubled: weights ``[W, (beta - 1) W]`` over (regular, burst) channels."""
    new = copy.deepcopy(layer)
    W = layer.weight.detach()
    bm1 = (beta.detach().to(W.dtype) - 1.0).reshape(-1)
    if isinstance(layer, nn.Linear):
        if W.shape[1] % C:
            raise ValueError(f"decouple_lifb: {type(layer).__name__} with {W.shape[1]} inputs does not follow a "
                             f"LIFB layer of {C} channels")
        Wc = W.reshape(W.shape[0], C, W.shape[1] // C)
        W2 = torch.cat([Wc, Wc * bm1.reshape(1, -1, 1)], dim=1).reshape(W.shape[0], 2 * W.shape[1])
        new.in_features = 2 * layer.in_features
    else:
        if layer.groups != 1 or W.shape[1] != C:
            raise ValueError(f"decouple_lifb: {type(layer).__name__} (groups={layer.groups}, in_channels="
                             f"{layer.in_channels}) cannot take the doubled output of a LIFB layer of {C} channels")
        W2 = torch.cat([W, W * bm1.reshape(1, -1, *([1] * (W.dim() - 2)))], dim=1)
        new.in_channels = 2 * layer.in_channels
    new.weight = nn.Parameter(W2)
    return new


def decouple_lifb(model: nn.Module, example_input: torch.Tensor, *, check: bool = True, rtol: float = 1e-4,
                  atol: float = 1e-5) -> nn.Module:
    """A copy of ``model`` where every :class:`LIFB` layer is replaced by its :class:`LIFBPair` of binary LIF units
    and the next weight layer (Linear/Conv, found by running ``example_input``) gets the weights
    ``[W, (beta - 1) W]``.  Between them only pooling, dropout, flatten or identity layers are allowed (they act per
    channel; max-pooling commutes because ``beta >= 1`` and a burst implies a regular spike).  With ``check``, the
    copy's output on ``example_input`` must match the original's, else a ValueError is raised.
    """
    model_c = copy.deepcopy(model)
    calls = []

    def hook(mod, args):
        shape = tuple(args[0].shape) if args and torch.is_tensor(args[0]) else None
        calls.append((mod, shape))

    names = {mod: name for name, mod in model_c.named_modules()}
    handles = [m.register_forward_pre_hook(hook) for m in model_c.modules()
               if isinstance(m, LIFB) or not any(True for _ in m.children())]
    was_training = model_c.training
    model_c.eval()
    try:
        with torch.no_grad():
            ref = model_c(example_input)
    finally:
        for h in handles:
            h.remove()
    lifb_calls = [i for i, (m, _) in enumerate(calls) if isinstance(m, LIFB)]
    if not lifb_calls:
        raise ValueError("decouple_lifb: model has no LIFB layer that runs on example_input")
    seen = set()
    for i in lifb_calls:
        m, shape = calls[i]
        if m in seen:
            raise ValueError(f"decouple_lifb: LIFB layer {names[m]!r} runs more than once per forward pass")
        seen.add(m)
        j = i + 1
        while j < len(calls) and isinstance(calls[j][0], _PASS_THROUGH):
            j += 1
        if j >= len(calls) or not isinstance(calls[j][0], _CONSUMERS):
            what = "the end of the model" if j >= len(calls) else f"{type(calls[j][0]).__name__} {names[calls[j][0]]!r}"
            raise ValueError(f"decouple_lifb: LIFB layer {names[m]!r} feeds {what}; only a Linear/Conv layer "
                             "(optionally after pooling, dropout or flatten) can absorb the weight split")
        consumer = calls[j][0]
        C = shape[2] if len(shape) >= 3 else 1
        beta = m.beta_value().detach()
        beta = beta.expand(C) if beta.dim() == 0 else beta
        _set_child(model_c, names[consumer], _split_weight(consumer, beta, C))
        _set_child(model_c, names[m], LIFBPair.from_lifb(m))
    if check:
        with torch.no_grad():
            out = model_c(example_input)
        if not torch.allclose(out, ref, rtol=rtol, atol=atol):
            raise ValueError(f"decouple_lifb: the decoupled model differs from the original (max abs diff "
                             f"{(out - ref).abs().max().item():.3g}); a layer between a LIFB and its next weight "
                             "layer is not linear per channel")
    model_c.train(was_training)
    return model_c


NEURONS.register("lifb", help="LIF-or-burst: rest / regular spike / burst of learnable density beta "
                              "(Shen et al. 2023; LOW-confidence reconstruction)")(LIFB)
