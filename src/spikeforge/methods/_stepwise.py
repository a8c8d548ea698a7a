"""Running a model a window of time steps at a time, for the methods that cut BPTT's graph (``tbptt``, ``ottt``).

A zoo model is a :class:`~spikeforge.models.base.SpikingModel`: ``forward(x) = forward_seq(to_sequence(x))``, and
its neurons take a whole ``[T, B, ...]`` sequence with explicit state (``neuron(x_seq, state,
return_state=True)``).  So the least invasive way to run it ``K`` steps at a time is: encode once
(``to_sequence``), call ``forward_seq`` on each window ``x_seq[t0:t1]``, and let every neuron continue from the
state its call on the previous window ended with.  :class:`CarryState` does the last part with forward hooks
registered for one training step: the state lives in the hook object (created and dropped per step), never on the
module, and is **detached** between windows, which is exactly where the graph is cut.  Stateless layers
(``TimeFold``: conv, linear, pooling, BatchNorm) see only the window's steps.

This is correct only for models whose time coupling lives in their neurons.  :func:`check_windowed` refuses
the known exceptions (per-step norms, attention over previous steps, spike-train blocks, models running their
own time loop) before training; :meth:`CarryState.end_window` refuses at the first step any neuron that was not
run through ``forward`` (a model loop calling ``.step`` directly).

Under DDP (``DistributedDataParallel``) the loop passes the wrapper; these methods run its ``module`` (DDP's
forward runs the whole sequence) and average gradients themselves (:func:`sync_gradients`) after their several
backward passes, once per optimiser step — DDP's own hooks stay idle since its forward never ran.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..neurons.base import BaseNeuron


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _not_time_local() -> dict:
    """Layer types that couple time steps outside a neuron's state -> why (they cannot run a window at a time)."""
    from ..layers import BNTT, SCTFA, STCB, TEBN
    from ..models.lmu import SpikingLMU

    return {BNTT: "one set of BatchNorm statistics per time step t", TEBN: "one learned scale per time step t",
            SCTFA: "its attention runs its own loop over the previous step's spikes",
            STCB: "its block runs its own loop over the whole spike train",
            SpikingLMU: "it runs its own time loop in forward_seq"}


def check_windowed(model: nn.Module, method: str) -> None:
    """One ``ValueError`` naming the model or layer when ``model`` cannot run a window of steps at a time."""
    from ..models.base import SpikingModel

    if not isinstance(model, SpikingModel) or type(model).forward is not SpikingModel.forward:
        raise ValueError(f"{method} runs the model a window of steps at a time through SpikingModel.forward_seq; "
                         f"{type(model).__name__} is not a SpikingModel with the standard forward — use method bptt")
    bad = _not_time_local()
    for name, m in model.named_modules():
        for cls, why in bad.items():
            if isinstance(m, cls):
                where = f"at {name}" if name else "(the model)"
                raise ValueError(f"{method} runs the model a window of steps at a time; {type(m).__name__} {where} "
                                 f"couples time steps outside its neurons ({why}) — use method bptt")
    if not any(isinstance(m, BaseNeuron) for m in model.modules()):
        raise ValueError(f"{method} cuts the graph between time steps inside spiking neurons; "
                         f"{type(model).__name__} has no spikeforge neuron — use method bptt")


def _detach(state):
    return tree_map(lambda t: t.detach() if torch.is_tensor(t) else t, state)


class CarryState:
    """While entered, every :class:`BaseNeuron` of ``model`` continues from where its call on the previous window
    ended; the carried state is detached (no gradient flows across a window boundary).

    Call :meth:`end_window` after each window: it checks that every neuron ran through ``forward`` and as often
    as in the first window.  A neuron module used at several sites keeps one state per site (call order).
    """

    def __init__(self, model: nn.Module, method: str):
        self.method = method
        self.names = {m: name for name, m in model.named_modules() if isinstance(m, BaseNeuron)}
        self.state: dict = {}
        self.calls: dict = {}
        self.expected: dict | None = None
        self.handles: list = []

    def __enter__(self):
        for m in self.names:
            self.handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._post, with_kwargs=True))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.state.clear()
        return False

    def _pre(self, module, args, kwargs):
        if len(args) != 1 or kwargs.get("state") is not None or kwargs.get("return_state"):
            raise ValueError(f"{self.method}: the neuron at {self.names[module]} is given a state by the model "
                             "itself, so its state cannot be carried across windows — use method bptt")
        i = self.calls.get(module, 0)
        self.calls[module] = i + 1
        return args, {**kwargs, "state": self.state.get((module, i)), "return_state": True}

    def _post(self, module, args, kwargs, out):
        i = self.calls[module] - 1
        if kwargs.get("return_v"):
            s, st, v_seq = out
            self.state[(module, i)] = _detach(st)
            return s, v_seq
        s, st = out
        self.state[(module, i)] = _detach(st)
        return s

    def end_window(self) -> None:
        calls = {m: self.calls.get(m, 0) for m in self.names}
        self.calls = {}
        if self.expected is None:
            idle = [self.names[m] for m, n in calls.items() if n == 0]
            if idle:
                raise ValueError(f"{self.method}: the neuron at {idle[0]} did not run through its forward (the model "
                                 "runs it in its own loop, e.g. through .step), so its state cannot be carried "
                                 "across windows — use method bptt")
            self.expected = calls
        elif calls != self.expected:  # pragma: no cover - a model whose structure changes between windows
            m = next(m for m in calls if calls[m] != self.expected[m])
            raise ValueError(f"{self.method}: the neuron at {self.names[m]} ran {calls[m]} times in a window, "
                             f"{self.expected[m]} in the first one")


def windows(T: int, K: int) -> list[tuple[int, int]]:
    """``[(0, K), (K, 2K), ..., (.., T)]``: the last window is shorter when ``K`` does not divide ``T``."""
    return [(t0, min(t0 + K, T)) for t0 in range(0, T, K)]


def broadcast_buffers(model: nn.Module) -> None:
    """What DDP's forward does first: every process takes rank 0's buffers (e.g. BatchNorm running statistics)."""
    if not isinstance(model, nn.parallel.DistributedDataParallel) or not model.broadcast_buffers:
        return
    import torch.distributed as dist

    for b in model.module.buffers():
        dist.broadcast(b, 0, group=model.process_group)


@torch.no_grad()
def sync_gradients(model: nn.Module) -> None:
    """Under DDP: average every parameter's gradient over the processes (what DDP's reducer does for one
    backward), so the optimiser step matches one process on the global batch.  A parameter without a gradient
    takes zeros, so every process reduces the same list.  No-op without DDP."""
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return
    import torch.distributed as dist

    params = [p for p in model.module.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = dist.get_world_size(model.process_group)
    groups: dict = {}
    for p in params:  # one all-reduce per dtype and device
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=model.process_group)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
