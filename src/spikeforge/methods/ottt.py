r"""``ottt``: online training through time (Xiao et al., NeurIPS 2022; card ``ottt-online-training.md``).

The network runs one time step at a time; the neurons' membrane is carried to the next step **detached** (no
temporal graph), and every step is backpropagated at once, spatially only, with its instantaneous loss
:math:`\mathcal{L}[t] = \mathcal{L}(O_t, y) / T`.  Every synaptic layer (conv / linear) keeps a presynaptic
trace of its input, with the neurons' leak :math:`\lambda = 1 - 1/\tau` (1 for IF),

.. math::
    \hat a[t] = \lambda\,\hat a[t-1] + s[t],\qquad \nabla_W \mathcal{L}[t] = \delta_u[t]\,\hat a[t]^\top ,

where :math:`\delta_u[t] = \partial\mathcal{L}[t]/\partial u[t]` is the layer output's gradient at step t.
The trick (the official ``WrapedSNNOp`` / ``Replace``): the layer's forward **value** is computed from
:math:`s[t]`, its backward treats the input as :math:`\hat a[t]`, so autograd yields :math:`\delta_u\hat a^\top`
for the weight and the usual :math:`W^\top\delta_u` for the layer below.  For a single LIF layer with soft reset
and detached reset this equals BPTT's gradient exactly (card check 1); for deeper nets it drops the temporal
paths through hidden spikes.  Memory is that of one step, whatever ``T``: each step's graph is freed by its
backward pass.

- ``variant="accumulate"`` (OTTT_A): the gradients of the ``T`` steps add up; the loop steps the optimiser once.
- ``variant="online"`` (OTTT_O): an optimiser update after every step (``StepContext.update`` for steps
  ``1..T-1``, the loop's own step after step ``T``).

The model must have no batch statistics over time (BatchNorm: use ``model.kwargs.norm=ws``) and LIF/IF neurons
sharing one fixed leak; :meth:`OTTT.check` names the layer otherwise.  Under DDP the gradients are averaged by
:func:`~spikeforge.methods._stepwise.sync_gradients` before every update.

Example:
    >>> from spikeforge.config import TrainConfig
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> m = create_method("ottt", {"variant": "online"})
    >>> m.check(create_model("convnet", T=4, input_size=16, channels=(4, 8)), TrainConfig())
    Traceback (most recent call last):
    ...
    ValueError: OTTT trains online per time step; BatchNorm2d at features.0.layer.1 needs batch statistics ...
    >>> m.check(create_model("convnet", T=4, input_size=16, channels=(4, 8), norm="ws"), TrainConfig())
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers.norm import BNTT, TEBN, _FoldedBN
from ..neurons.base import BaseNeuron
from ..neurons.lif import IF, LIF
from ._stepwise import CarryState, broadcast_buffers, check_windowed, sync_gradients, unwrap
from .base import Method, StepContext, StepResult
from .registry import METHODS

VARIANTS = ("accumulate", "online")

#: layers whose weight gradient uses the presynaptic trace (subclasses too: scaled-WS conv / linear)
SYNAPSES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, _FoldedBN, BNTT, TEBN)


@dataclass(frozen=True)
class OTTTConfig:
    """``variant``: ``accumulate`` (OTTT_A, one update per batch) or ``online`` (OTTT_O, one per time step)."""

    variant: str = "accumulate"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"method.kwargs.variant: {self.variant!r}; allowed: 'accumulate' (OTTT_A: gradients "
                             "summed over T, one update) or 'online' (OTTT_O: one update per time step)")


def trace_decay(model: nn.Module, method: str = "ottt") -> float:
    """The leak :math:`\\lambda` shared by every neuron of ``model`` (``1 - 1/tau`` for LIF, 1 for IF), or one
    ``ValueError`` naming the neuron that has another kind of leak or a different one."""
    first = None
    for name, m in model.named_modules():
        if not isinstance(m, BaseNeuron):
            continue
        if type(m) is LIF:
            lam = 1.0 - 1.0 / m.tau
        elif type(m) is IF:
            lam = 1.0
        else:
            raise ValueError(f"{method}: the presynaptic trace decays with the neurons' leak, so every neuron must be "
                             f"LIF (fixed tau) or IF; {type(m).__name__} at {name} is not — use neuron lif or if, or "
                             "method bptt")
        if first is None:
            first = (name, lam)
        elif lam != first[1]:
            raise ValueError(f"{method}: the presynaptic trace needs one leak for every neuron; the neuron at {name} "
                             f"decays by {lam:g} per step, the one at {first[0]} by {first[1]:g} — give every neuron "
                             "the same tau")
    if first is None:
        raise ValueError(f"{method}: {type(model).__name__} has no LIF or IF neuron, so there is no leak for the "
                         "presynaptic trace — use method bptt")
    return first[1]


class _ValueOfFn(torch.autograd.Function):
    """Forward: ``value``; backward: the incoming gradient goes to ``path`` (whose forward value is unused).
    The official code's ``Replace``."""

    @staticmethod
    def forward(ctx, path, value):
        ctx.dtype = path.dtype
        return value

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.dtype), None


class PresynapticTraces:
    """While entered, every :data:`SYNAPSES` layer of ``model`` computes its output from its input ``s[t]`` but
    backpropagates as if its input were the trace ``a_hat[t] = decay * a_hat[t-1] + s[t]`` (kept without grad,
    one per layer and call site).  Call :meth:`end_step` after each time step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.layers = [m for m in model.modules() if isinstance(m, SYNAPSES)]
        self.trace: dict = {}
        self.inputs: dict = {}
        self.calls: dict = {}
        self.handles: list = []

    def __enter__(self):
        for m in self.layers:
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.trace.clear()
        self.inputs.clear()
        return False

    def _pre(self, module, args):
        (s,) = args
        i = self.calls.get(module, 0)
        self.calls[module] = i + 1
        key = (module, i)
        with torch.no_grad():
            prev = self.trace.get(key)
            dtype = torch.promote_types(s.dtype, torch.float32)
            a_hat = s.to(dtype) if prev is None else prev * self.decay + s
        self.trace[key] = a_hat
        self.inputs[key] = s
        return (_ValueOfFn.apply(s, a_hat.to(s.dtype)),)  # the layer runs on a_hat: its backward uses a_hat

    def _post(self, module, args, out):
        s = self.inputs.pop((module, self.calls[module] - 1))
        with torch.no_grad():
            value = module.forward(s)  # the forward value from the spikes themselves
        return _ValueOfFn.apply(out, value)

    def end_step(self) -> None:
        self.calls = {}


@METHODS.register("ottt", help="online training through time: per-step backward with presynaptic traces, memory "
                               "flat in T (Xiao et al. 2022)")
class OTTT(Method):
    name = "ottt"
    card = "ottt-online-training.md"
    Config = OTTTConfig
    smoke_overrides = ("model.kwargs.norm=ws",)

    def check(self, model, cfg) -> None:
        net = unwrap(model)
        for name, m in net.named_modules():
            if isinstance(m, _BATCH_NORMS):
                raise ValueError(f"OTTT trains online per time step; {type(m).__name__} at {name} needs batch "
                                 "statistics over time — use norm='ws' (scaled weight standardisation) or "
                                 "method bptt")
        check_windowed(net, self.name)
        trace_decay(net, self.name)

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        net = unwrap(model)
        online = self.config.variant == "online"
        if online and ctx.update is None:
            raise ValueError("method.kwargs.variant: 'online' updates the weights after every time step, but this "
                             "loop gives no StepContext.update — use variant 'accumulate'")
        decay = trace_decay(net, self.name)
        broadcast_buffers(model)
        with ctx.autocast():
            x_seq = net.to_sequence(x)
        T = x_seq.shape[0]
        losses, outs = [], []
        with CarryState(net, self.name) as carry, PresynapticTraces(net, decay) as traces:
            for t in range(T):
                with ctx.autocast():
                    out = net.forward_seq(x_seq[t:t + 1])
                carry.end_window()
                traces.end_step()
                loss = ctx.loss_fn(out, y) * (1.0 / T)
                (loss * ctx.loss_scale).backward()  # frees this step's graph
                losses.append(loss.detach())
                outs.append(out.detach())
                if online and t < T - 1:
                    sync_gradients(model)
                    ctx.update()
        sync_gradients(model)
        return StepResult(torch.stack(losses).sum(), torch.cat(outs), aux={"variant": self.config.variant},
                          backward_passes=T)
