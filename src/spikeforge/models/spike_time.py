"""Spike-time models: networks whose neurons are computed in closed form from spike times (no time grid).

* ``bats_mlp`` (bats-multispike-fast-deep.md): input coding ``t = t_in_max * (1 - pixel)`` (pixel 0: no spike),
  then layers of multi-spike BATS neurons (:mod:`spikeforge.functional.bats`); the card's MNIST net is
  784-800-10 with ``tau_s = 0.13``, hidden ``theta = 0.2``, output ``theta = 1.3``, ``T_max = 0.2``, 30 spikes per
  neuron, ``w ~ U(-1, 1)``.
* ``nif_mlp`` / ``nif_convnet`` (temporal-coded-nif-snn.md): input coding ``z = exp(t)`` with
  ``t = scale * (1 - pixel)`` (brighter = earlier), then single-spike NIF layers
  (:class:`~spikeforge.neurons.NIFLinear` / :class:`~spikeforge.neurons.NIFConv2d`).  ``mode="relu"`` builds the
  ReLU ANN of the same shape (same widths, kernels and strides), for the "within 1% of the DNN" comparison.

Each model takes what every zoo model takes, a static batch ``[B, C, H, W]`` (pixel intensities in [0, 1]:
train with ``data.normalize=false``), and returns class scores ``[1, B, K]``, so the training loop and
``spikeforge eval`` score it unchanged: for BATS the output spike count (ties: the earlier first spike wins) or,
with ``readout="first_spike"``, minus the first spike time; for NIF ``-z_out`` (the first neuron to fire wins).
The spike times themselves: ``model.encode(x)`` then ``model.spike_times(t_in)`` (what the ``bats`` and ``nif``
methods train on).  A ``[T, B, ...]`` sequence is refused with one error: these models have no time grid.

``model.neuron`` must stay the default (``lif``): the neuron is the model's own (BATS: the current-based LIF of
the card; NIF: the non-leaky IF); ``model.T`` is ignored (the output has one "step").

Example:
    >>> import torch
    >>> from spikeforge.models import create_model
    >>> net = create_model("nif_mlp", num_classes=10, input_size=8, hidden=(16,))
    >>> tuple(net(torch.rand(2, 1, 8, 8)).shape)
    (1, 2, 10)
    >>> net(torch.rand(4, 2, 1, 8, 8))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: x: nif_mlp takes a static batch [B, C, H, W] of pixel intensities (it encodes them as spike ...
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..functional.bats import BATSOutput, bats_layer, bats_layer_reference, check_bats_params
from ..neurons.nif import NIFConv2d, NIFLinear
from .registry import MODELS

READOUTS = ("count", "first_spike")


def _check_neuron(model: str, neuron: str, neuron_kwargs) -> None:
    if neuron != "lif" or set(neuron_kwargs or {}) - {"backend"}:  # a time-grid LIF backend choice is moot
        raise ValueError(f"model.neuron: {model} has its own spike-time neuron, got neuron={neuron!r} "
                         f"{'with neuron_kwargs ' + repr(neuron_kwargs) if neuron_kwargs else ''}; allowed: the "
                         "default 'lif' and no model.neuron_kwargs (set the neuron's parameters in model.kwargs)")


def _check_widths(name, v):
    v = (v,) if isinstance(v, int) and not isinstance(v, bool) else tuple(v)
    if not v or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in v):
        raise ValueError(f"{name}: expected a list of integers >= 1, got {v!r}")
    return v


class SpikeTimeModel(nn.Module):
    """Common input checks: a static batch ``[B, C, H, W]`` of intensities in [0, 1]."""

    spike_time = True  # what the bats / nif methods check for
    registered_name = ""

    def __init__(self, num_classes, in_channels, input_size):
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, input_size

    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ValueError(f"x: {self.registered_name} takes a floating-point static batch [B, C, H, W], got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.dim() == 5:
            raise ValueError(f"x: {self.registered_name} takes a static batch [B, C, H, W] of pixel intensities (it "
                             f"encodes them as spike times), got shape {tuple(x.shape)}; a [T, B, ...] sequence has no "
                             "meaning for a spike-time model")
        if x.dim() != 4:
            raise ValueError(f"x: {self.registered_name} expected a static batch [B, C, H, W], got shape "
                             f"{tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} input channels, got {x.shape[1]} in shape "
                             f"{tuple(x.shape)}")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(f"x: expected spatial size {self.input_size}x{self.input_size} (input_size), got "
                             f"{tuple(x.shape[-2:])}")
        d = x.detach()
        if x.numel() and not torch.compiler.is_compiling() and (bool((d < 0).any()) or bool((d > 1).any()) or not bool(torch.isfinite(d).all())):
            raise ValueError(f"x: {self.registered_name} codes pixel intensities in [0, 1] as spike times, got values "
                             f"in [{d.min().item():g}, {d.max().item():g}]; train with data.normalize=false")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores ``[1, B, K]`` of a static batch (see the module docstring)."""
        return self.scores(self.spike_times(self.encode(x))).unsqueeze(0)


# --------------------------------------------------------------------------------------------------- BATS
class BATSMLP(SpikeTimeModel):
    """Flatten -> [BATS layer] x len(hidden) -> BATS output layer; spike times, not a time grid."""

    registered_name = "bats_mlp"

    def __init__(self, num_classes=10, in_channels=1, neuron="lif", neuron_kwargs=None, T=1, input_size=28,
                 hidden=(800,), tau_s=0.13, theta_hidden=0.2, theta_out=1.3, reset_ratio=1.0, t_in_max=0.1,
                 t_max=0.2, max_spikes=30, max_spikes_out=30, readout="count", init="uniform",
                 backend="numba"):
        super().__init__(num_classes, in_channels, input_size)
        _check_neuron(self.registered_name, neuron, neuron_kwargs)
        hidden = _check_widths("hidden", hidden)
        if isinstance(reset_ratio, bool) or not isinstance(reset_ratio, (int, float)) or not reset_ratio >= 0:
            raise ValueError(f"reset_ratio: got {reset_ratio!r}; allowed: a number >= 0 (delta_theta / theta)")
        check_bats_params(tau_s, theta_hidden, theta_hidden * reset_ratio, t_max, max_spikes)
        check_bats_params(tau_s, theta_out, theta_out * reset_ratio, t_max, max_spikes_out)
        if not (isinstance(t_in_max, (int, float)) and 0 < t_in_max <= t_max):
            raise ValueError(f"t_in_max: got {t_in_max!r}; allowed: a number in (0, t_max={t_max}]")
        if readout not in READOUTS:
            raise ValueError(f"readout: got {readout!r}; allowed: {', '.join(READOUTS)}")
        if init not in ("uniform", "positive"):
            raise ValueError(f"init: got {init!r}; allowed: 'uniform' (U(-1, 1), spike-count nets), 'positive' "
                             "(U(0, 1), the TTFS nets)")
        if backend not in ("numba", "reference"):
            raise ValueError(f"backend: got {backend!r}; allowed: 'numba' (fused CPU kernels), 'reference' "
                             "(the plain-torch definition of truth, slow)")
        widths = [in_channels * input_size * input_size, *hidden, num_classes]
        lo = -1.0 if init == "uniform" else 0.0
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(o, i).uniform_(lo, 1.0)) for i, o in zip(widths[:-1], widths[1:])])
        self.tau_s, self.theta_hidden, self.theta_out = float(tau_s), float(theta_hidden), float(theta_out)
        self.reset_ratio, self.t_in_max, self.t_max = float(reset_ratio), float(t_in_max), float(t_max)
        self.max_spikes, self.max_spikes_out = int(max_spikes), int(max_spikes_out)
        self.readout, self.backend = readout, backend

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` intensities -> input spike times ``[B, C*H*W, 1]``: ``t_in_max * (1 - x)``, none for 0."""
        x = self.check_images(x).flatten(1)
        t = self.t_in_max * (1.0 - x)
        return torch.where(x > 0, t, torch.full_like(t, math.inf)).unsqueeze(-1)

    def spike_times(self, t_in: torch.Tensor) -> list[BATSOutput]:
        """Every layer's output spikes (the last is the output layer), from input spike times ``[B, N, S]``."""
        fn = bats_layer if self.backend == "numba" else bats_layer_reference
        outs, t = [], t_in
        for i, w in enumerate(self.weights):
            last = i == len(self.weights) - 1
            theta = self.theta_out if last else self.theta_hidden
            out = fn(t, w, self.tau_s, theta, theta * self.reset_ratio, self.t_max,
                     self.max_spikes_out if last else self.max_spikes)
            outs.append(out)
            t = out.times
        return outs

    def scores(self, outs: list[BATSOutput]) -> torch.Tensor:
        """``[B, K]``: spike count + a tie-break < 1 for the earlier first spike (``readout="count"``), or
        ``-min(t_first, t_max) / t_max`` (``readout="first_spike"``)."""
        out = outs[-1]
        first = out.times[..., 0].detach().clamp(max=self.t_max) / self.t_max  # silent: 1
        if self.readout == "first_spike":
            return -first
        return out.counts.to(first.dtype) + 0.5 * (1.0 - first)


# --------------------------------------------------------------------------------------------------- NIF
class _NIFBase(SpikeTimeModel):
    def _common(self, neuron, neuron_kwargs, mode, scale, backend):
        _check_neuron(self.registered_name, neuron, neuron_kwargs)
        if backend not in ("numba", "reference"):
            raise ValueError(f"backend: got {backend!r}; allowed: 'numba' (fused CPU kernels), 'reference' "
                             "(the NIF layers' own torch closed form)")
        self.backend = backend
        if mode not in ("nif", "relu"):
            raise ValueError(f"mode: got {mode!r}; allowed: 'nif' (the temporal-coded SNN), 'relu' (the ReLU ANN of "
                             "the same shape)")
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0):
            raise ValueError(f"scale: got {scale!r}; allowed: a number > 0 (input spike times t = scale * (1 - x))")
        self.mode, self.scale = mode, float(scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input spike times ``z = exp(scale * (1 - x))`` (NIF) or the pixels themselves (``mode="relu"``)."""
        x = self.check_images(x)
        return x if self.mode == "relu" else torch.exp(self.scale * (1.0 - x))

    def scores(self, z_out: torch.Tensor) -> torch.Tensor:
        """``-z_out`` (NIF: the first neuron to fire wins) or the ANN's logits."""
        return z_out if self.mode == "relu" else -z_out

    def penalty_layers(self) -> list[nn.Module]:
        """The NIF layers (their weight-sum penalty and weights enter the ``nif`` loss)."""
        return [m for m in self.modules() if isinstance(m, (NIFLinear, NIFConv2d))]

    def _run(self, layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """One layer: a NIF layer on the fused kernels (``backend="numba"``) or its own forward."""
        if self.backend == "numba" and isinstance(layer, NIFLinear):
            from ..kernels.nif_numba import nif_spike_time_numba

            return nif_spike_time_numba(z, layer.weight, layer.bias_weight, layer.theta)
        if self.backend == "numba" and isinstance(layer, NIFConv2d):
            from ..kernels.nif_numba import nif_conv2d_numba

            return nif_conv2d_numba(z, layer.weight, layer.bias_weight, layer.theta, layer.stride, layer.padding)
        return layer(z)

    def check_spike_times(self, z: torch.Tensor, ndim: int) -> torch.Tensor:
        if self.mode == "nif" and (not torch.is_tensor(z) or z.dim() != ndim):
            raise ValueError(f"z_in: {self.registered_name}.spike_times takes input spike times z = exp(t) with "
                             f"{ndim} dims ([B, ...], see encode), got shape {tuple(getattr(z, 'shape', ()))}"
                             + ("; a [T, B, ...] spike train is not spike times" if getattr(z, "dim", lambda: 0)()
                                == ndim + 1 else ""))
        return z


class NIFMLP(_NIFBase):
    """Flatten -> [NIFLinear] x len(hidden) -> NIFLinear (``mode="relu"``: Linear/ReLU of the same widths)."""

    registered_name = "nif_mlp"

    def __init__(self, num_classes=10, in_channels=1, neuron="lif", neuron_kwargs=None, T=1, input_size=28,
                 hidden=(400,), mode="nif", scale=3.0, theta=1.0, backend="numba"):
        super().__init__(num_classes, in_channels, input_size)
        self._common(neuron, neuron_kwargs, mode, scale, backend)
        hidden = _check_widths("hidden", hidden)
        widths = [in_channels * input_size * input_size, *hidden, num_classes]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if mode == "nif":
                layers.append(NIFLinear(a, b, theta=theta))
            else:
                layers.append(nn.Linear(a, b))
                if i < len(widths) - 2:
                    layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def spike_times(self, z_in: torch.Tensor) -> torch.Tensor:
        """Output spike times ``z_out [B, K]`` from input ones ``[B, C, H, W]`` (ReLU mode: logits)."""
        z = self.check_spike_times(z_in, 4).flatten(1)
        for layer in self.layers:
            z = self._run(layer, z)
        return z


class NIFConvNet(_NIFBase):
    """[NIFConv2d kxk, stride 2] per entry of ``channels`` -> flatten -> NIFLinear x hidden -> NIFLinear
    (``mode="relu"``: Conv2d/ReLU of the same shapes).  The card's MNIST SCNN has two such conv layers."""

    registered_name = "nif_convnet"

    def __init__(self, num_classes=10, in_channels=1, neuron="lif", neuron_kwargs=None, T=1, input_size=28,
                 channels=(16, 32), kernel_size=5, hidden=(), mode="nif", scale=3.0, theta=1.0, backend="numba"):
        super().__init__(num_classes, in_channels, input_size)
        self._common(neuron, neuron_kwargs, mode, scale, backend)
        channels = _check_widths("channels", channels)
        hidden = _check_widths("hidden", hidden) if hidden else ()
        convs, c, size = [], in_channels, input_size
        for c_out in channels:
            pad = kernel_size // 2
            convs.append(NIFConv2d(c, c_out, kernel_size, stride=2, padding=pad, theta=theta) if mode == "nif"
                         else nn.Conv2d(c, c_out, kernel_size, stride=2, padding=pad))
            if mode == "relu":
                convs.append(nn.ReLU())
            c, size = c_out, (size + 2 * pad - kernel_size) // 2 + 1
        if size < 1:
            raise ValueError(f"input_size: {input_size} is too small for {len(channels)} stride-2 layers")
        self.features = nn.Sequential(*convs)
        widths = [c * size * size, *hidden, num_classes]
        head = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            head.append(NIFLinear(a, b, theta=theta) if mode == "nif" else nn.Linear(a, b))
            if mode == "relu" and i < len(widths) - 2:
                head.append(nn.ReLU())
        self.head = nn.Sequential(*head)

    def spike_times(self, z_in: torch.Tensor) -> torch.Tensor:
        z = self.check_spike_times(z_in, 4)
        for layer in self.features:
            z = self._run(layer, z)
        z = z.flatten(1)
        for layer in self.head:
            z = self._run(layer, z)
        return z


_TINY_META = dict(defaults={"num_classes": 10, "in_channels": 1}, input="spike_times", tiny_input=(1, 8, 8))
MODELS.register("bats_mlp", help="BATS multi-spike exact-gradient MLP (spike times; method bats)",
                tiny={"input_size": 8, "hidden": (8,)}, **_TINY_META)(BATSMLP)
MODELS.register("nif_mlp", help="temporal-coded NIF MLP (single spike, closed form; method nif)",
                tiny={"input_size": 8, "hidden": (8,)}, **_TINY_META)(NIFMLP)
MODELS.register("nif_convnet", help="temporal-coded NIF conv net (stride-2 NIF convs; method nif)",
                tiny={"input_size": 8, "channels": (4,)}, **_TINY_META)(NIFConvNet)
