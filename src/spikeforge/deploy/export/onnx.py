r"""ONNX export (extra ``onnx``): ``to_onnx(model, sample_input, path, mode="unrolled" | "step")``.

- ``mode="unrolled"``: the whole network over ``T`` steps, ``x_seq [T, B, ...] -> y [T, B, ...]`` (the input is
  the encoded sequence: encoders stay outside the file).  The batch axis is dynamic.
- ``mode="step"``: one step of the recurrence with the neurons' state as explicit inputs and outputs, what a
  streaming runtime needs: inputs ``x_t [B, ...], state_0, state_1, ...``, outputs ``y_t, state_0_out, ...``
  (one membrane tensor ``v [B, ...]`` per neuron layer, in call order).  Start from :attr:`OnnxExport.initial_state`
  and feed each step's state outputs back in.

The export traces the reference execution (``backend="reference"`` for every neuron, ``torch``'s max pooling):
the fused CPU/Triton kernels are never traced, so what ONNX runs is the equation the kernels are tested against.
Spikes are ``h >= v_threshold`` (``GreaterOrEqual``), the reset is the same arithmetic as the reference, so an
ONNX runtime reproduces spikeforge's spikes exactly and the readout to float rounding.

Example:
    >>> import torch, tempfile, os
    >>> from torch import nn
    >>> from spikeforge.layers import TimeFold
    >>> from spikeforge.neurons import LIF
    >>> from spikeforge.deploy.export.onnx import to_onnx
    >>> net = nn.Sequential(TimeFold(nn.Linear(3, 4)), LIF(), TimeFold(nn.Linear(4, 2)))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     info = to_onnx(net, torch.rand(5, 2, 3), os.path.join(d, "net.onnx"), mode="step")
    ...     info.input_names, [tuple(s.shape) for s in info.initial_state]
    (['x', 'state_0'], [(2, 4)])
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ...functional.lif import LIFState
from ...layers.pooling import MaxPool2d as _SfMaxPool2d
from ...neurons.base import BaseNeuron

MODES = ("unrolled", "step")


@dataclass
class OnnxExport:
    """What :func:`to_onnx` wrote: the file, its input/output names and (step mode) the initial state."""

    path: str
    mode: str
    input_names: list
    output_names: list
    initial_state: list = field(default_factory=list)  # numpy arrays, one per neuron layer (step mode)


def _reference_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` in eval mode that runs the reference execution (no fused kernels)."""
    net = copy.deepcopy(model).eval().cpu()
    for m in net.modules():
        if isinstance(m, BaseNeuron):
            m.backend = "reference"
            m.check_inputs = False  # a data-dependent check would be frozen into the trace
        if type(m) is _SfMaxPool2d:
            m.__class__ = nn.MaxPool2d  # same arguments and values; torch's kernel exports
    return net


def _sequence_fn(net: nn.Module, sample: torch.Tensor):
    """``(fn, x_seq)``: the function from an encoded sequence to the output, and the sample as that sequence."""
    from ...models.base import SpikingModel

    if isinstance(net, SpikingModel):
        x = sample
        if x.dim() == net.static_ndim:
            if net.encoder != "direct":
                raise ValueError(f"sample_input: the model encodes static input with {net.encoder!r}, which is "
                                 "random; pass the encoded sequence [T, B, ...] (encoders stay outside the file)")
            x = x.unsqueeze(0).expand(net.T, *x.shape)
        elif x.dim() == net.static_ndim + 1:
            net.check_steps(x, "[T, B, ...]")
        else:
            raise ValueError(f"sample_input: expected [B, ...] with {net.static_ndim} dims or [T, B, ...], got shape "
                             f"{tuple(x.shape)}")
        return net.forward_seq, x.float().contiguous()
    if sample.dim() < 3:
        raise ValueError(f"sample_input: expected a time-major sequence [T, B, ...], got shape {tuple(sample.shape)}")
    return net, sample.contiguous()


class _Unrolled(nn.Module):
    def __init__(self, net, fn):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, x_seq):
        return self.fn(x_seq)


class _Step(nn.Module):
    """One step with explicit neuron states: ``(x_t, *v) -> (y_t, *v')``."""

    def __init__(self, net, fn, neurons):
        super().__init__()
        self.net, self.fn, self.neurons = net, fn, neurons
        self._states, self._new = None, None
        for i, m in enumerate(neurons):
            m.register_forward_pre_hook(self._pre(i))
            m.register_forward_hook(self._post(i))

    def _pre(self, i):
        def hook(m, args):
            return (args[0], LIFState(self._states[i]))
        return hook

    def _post(self, i):
        def hook(m, args, out):
            s, st = out
            self._new[i] = st.v
            return s
        return hook

    def forward(self, x_t, *states):
        self._states, self._new = list(states), [None] * len(states)
        y = self.fn(x_t.unsqueeze(0)).squeeze(0)
        return (y, *self._new)


def _neurons_in_call_order(net, fn, x_seq) -> list:
    order = []
    hooks = [m.register_forward_hook(lambda m, a, o: order.append(m)) for m in net.modules()
             if isinstance(m, BaseNeuron)]
    try:
        with torch.no_grad():
            fn(x_seq[:1])
    finally:
        for h in hooks:
            h.remove()
    seen, uniq = set(), []
    for m in order:
        if id(m) in seen:
            raise ValueError(f"{type(m).__name__}: one neuron module is called twice per step; step mode needs one "
                             "state per call site")
        seen.add(id(m))
        uniq.append(m)
    return uniq


def _check_step_neuron(name: str, m: nn.Module) -> None:
    from ...neurons.lif import IF, LIF, PLIF

    if type(m) not in (IF, LIF, PLIF):
        raise ValueError(f"{name} ({type(m).__name__}): step mode exports the state of IF/LIF/PLIF neurons "
                         "(state LIFState(v)); export this model with mode='unrolled'")


def to_onnx(model: nn.Module, sample_input: torch.Tensor, path, mode: str = "unrolled", opset: int = 17) -> OnnxExport:
    """Write ``model`` as an ONNX file at ``path`` (see the module docstring for the two modes).

    ``sample_input``: for a zoo model a static batch ``[B, ...]`` (``direct`` encoder: repeated over T) or a sequence
    ``[T, B, ...]``; for any other module a sequence ``[T, B, ...]``.  ``opset``: the ONNX opset (>= 13); an op the
    opset cannot express raises a ``ValueError`` naming it.
    """
    if mode not in MODES:
        raise ValueError(f"mode: unknown value {mode!r}; allowed: {', '.join(MODES)}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(f"opset: expected an integer >= 13, got {opset!r}")
    if not torch.is_tensor(sample_input):
        raise ValueError(f"sample_input: expected a tensor, got {type(sample_input).__name__}")
    try:
        import onnx  # noqa: F401
    except ImportError as e:  # pragma: no cover - the extra is installed in CI
        raise ValueError("ONNX export needs the onnx package: pip install 'spikeforge[onnx]'") from e
    net = _reference_copy(model)
    fn, x_seq = _sequence_fn(net, sample_input.detach().cpu())
    path = os.fspath(path)
    if mode == "unrolled":
        wrapper, args = _Unrolled(net, fn), (x_seq,)
        inputs, outputs = ["x"], ["y"]
        dyn = {"x": {1: "batch"}, "y": {1: "batch"}}
        init = []
    else:
        names = {m: n for n, m in net.named_modules()}
        neurons = _neurons_in_call_order(net, fn, x_seq)
        for m in neurons:
            _check_step_neuron(names[m], m)
        shapes = {}  # each neuron's one-step input shape [B, ...]: its state's shape
        hooks = [m.register_forward_hook(lambda m, a, o: shapes.__setitem__(m, a[0].shape[1:])) for m in neurons]
        try:
            with torch.no_grad():
                fn(x_seq[:1])
        finally:
            for h in hooks:
                h.remove()
        # a LIF-family neuron starts at v_reset (hard reset) or 0 (soft reset)
        init = [torch.full(shapes[m], 0.0 if m.v_reset is None else float(m.v_reset), dtype=x_seq.dtype)
                for m in neurons]
        wrapper = _Step(net, fn, neurons)
        args = (x_seq[0], *init)
        inputs = ["x"] + [f"state_{i}" for i in range(len(neurons))]
        outputs = ["y"] + [f"state_{i}_out" for i in range(len(neurons))]
        dyn = {n: {0: "batch"} for n in inputs + outputs}
        init = [t.numpy() for t in init]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks frozen at the traced shapes
            torch.onnx.export(wrapper, args, path, input_names=inputs, output_names=outputs, dynamic_axes=dyn,
                              opset_version=opset, dynamo=False)
    except Exception as e:  # torch.onnx.errors.* (an op the opset lacks) and the tracer's errors
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"ONNX export (opset {opset}) failed: {msg}; only ops ONNX opset {opset} defines export: "
                         "try a higher opset or replace that layer") from None
    return OnnxExport(path, mode, inputs, outputs, init)
