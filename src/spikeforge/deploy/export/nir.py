r"""NIR (Neuromorphic Intermediate Representation) export and import: ``to_nir``, ``from_nir``, ``save_nir``,
``load_nir`` (extra ``nir``).

NIR describes neurons in continuous time; spikeforge's neurons are discrete steps of length ``dt``.  The
mapping is forward Euler of NIR's equations with step ``dt`` (written out in docs/interop.md):

.. math::
    \text{NIR LIF:}\ \tau\dot v = (v_{leak} - v) + R I
    \quad\Rightarrow\quad v_t = v_{t-1} + \tfrac{dt}{\tau}\,(v_{leak} - v_{t-1} + R\,x_t)

which equals spikeforge's LIF :math:`h_t = v_{t-1} + k\,(x_t - (v_{t-1} - v_{reset}))` with
:math:`k = 1/\text{tau}`, so

- LIF (``decay_input=True``): :math:`\tau = dt\cdot\text{tau},\ R = 1,\ v_{leak} = v_{reset}`;
- LIF (``decay_input=False``, :math:`h_t = v_{t-1} - k(v_{t-1} - v_{reset}) + x_t`): the same with
  :math:`R = \text{tau}`;
- IF (:math:`h_t = v_{t-1} + x_t`): NIR IF :math:`\dot v = R I` with :math:`R = 1/dt`;
- PLIF: LIF with :math:`\text{tau} = 1/\sigma(w)` (per channel when it has ``num_channels``);
- :math:`\theta` = ``v_threshold``, NIR ``v_reset`` = ``v_reset`` (hard reset only: NIR 1.0 has no
  subtractive reset, so a soft-reset neuron (``v_reset=None``) is refused).

The inverse (import) is :math:`\text{tau} = \tau/dt`, ``decay_input=True`` when :math:`R = 1` and
``decay_input=False`` when :math:`R = \tau/dt` (any other :math:`R` becomes a Scale before the neuron).  A
``CubaLIF`` whose synapse has no memory (:math:`\tau_{syn} = dt`, so :math:`I_t = w_{in} x_t`) imports as that
LIF; with a longer synaptic time constant there is no spikeforge neuron for it and the import says so.

Conventions that differ: NIR (and snnTorch, Norse) spike when :math:`v > \theta`, spikeforge when
:math:`v \ge \theta`; the two disagree only when the membrane lands exactly on the threshold.  Reset happens in
the step that spikes in all three (snnTorch is imported with ``reset_delay=False``).

Graph: stateless layers (Linear/Affine, Conv1d/2d, Flatten, AvgPool2d) become their NIR nodes; BatchNorm is
folded into the layer before it first (:func:`spikeforge.convert.fold.fold_batchnorm`); a residual sum (SEW
``ADD``) becomes several edges into the consumer (NIR sums a node's inputs); ``x * c`` with a constant is a
``Scale``.  ``MaxPool2d`` on spikes is ``SumPool2d`` (or ``AvgPool2d``) followed by an LIF with
:math:`\tau = dt` that fires when any input spiked -- exact for binary spikes, which is the only case it is
exported for.  Anything else (GLIF gates, BNTT, ALIF, a product of two signals) raises a ``ValueError`` naming
the layer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.layers import TimeFold
    >>> from spikeforge.neurons import LIF
    >>> from spikeforge.deploy.export.nir import from_nir, to_nir
    >>> net = nn.Sequential(TimeFold(nn.Linear(3, 4)), LIF(tau=2.0), TimeFold(nn.Linear(4, 2)))
    >>> x = torch.rand(5, 2, 3)                               # [T, B, N]
    >>> graph = to_nir(net, x)
    >>> sorted(graph.nodes)
    ['0', '1', '2', 'input', 'output']
    >>> torch.equal(from_nir(graph)(x), net(x))
    True
"""

from __future__ import annotations

import copy
import math
import os
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ...layers import TimeFold
from ...layers.pooling import MaxPool2d as _SfMaxPool2d
from ...neurons.base import BaseNeuron
from ...neurons.lif import IF, LIF, PLIF

MAXPOOL_AS = ("sum", "avg")
SUPPORTED_LAYERS = ("Linear", "Conv1d", "Conv2d", "Flatten", "AvgPool2d", "MaxPool2d (on spikes)", "Identity",
                    "Dropout", "BatchNorm (folded)", "IF", "LIF", "PLIF", "LI", "Scale", "x + y", "x * constant")
SUPPORTED_NODES = ("Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d",
                   "Scale", "IF", "LIF", "CubaLIF (tau_syn = dt)", "LI")


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - the extra is installed in CI
        raise ValueError("NIR export needs the nir package: pip install 'spikeforge[nir]'") from e
    return nir


# ----------------------------------------------------------------------------------------------- modules
class Scale(nn.Module):
    """``y = x * scale`` (NIR ``Scale``), ``scale`` broadcast over one step's shape."""

    def __init__(self, scale):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return x_seq * self.scale.to(x_seq.dtype)


class LI(nn.Module):
    r"""Leaky integrator readout (NIR ``LI``), no spikes: :math:`v_t = v_{t-1} + k\,(v_{leak} - v_{t-1} + r\,x_t)`
    with :math:`k = dt/\tau`; returns :math:`v` at every step, ``[T, B, ...]``.  ``k``, ``r``, ``v_leak`` are
    numbers or arrays of one step's shape."""

    def __init__(self, k, r=1.0, v_leak=0.0):
        super().__init__()
        for name, val in (("k", k), ("r", r), ("v_leak", v_leak)):
            self.register_buffer(name, torch.as_tensor(np.asarray(val, dtype=np.float64)))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        k, r, vl = (b.to(x_seq.dtype) for b in (self.k, self.r, self.v_leak))
        v, out = torch.zeros_like(x_seq[0]), []
        for x_t in x_seq:
            v = v + k * (vl - v + r * x_t)
            out.append(v)
        return torch.stack(out)


class NIRNetwork(nn.Module):
    """A NIR graph run by spikeforge on time-major ``[T, B, ...]`` sequences.  ``layers[name]`` is the module of
    NIR node ``name`` (names with ``.`` replaced by ``_``); a node with several inputs gets their sum."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]", inputs: dict, output: list, dt: float):
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.inputs = inputs  # node -> names of the nodes feeding it ("input" = the graph's input)
        self.output = output  # names feeding the graph's output
        self.dt = dt

    @staticmethod
    def _sum(vals: dict, names: list) -> torch.Tensor:
        y = vals[names[0]]
        for n in names[1:]:
            y = y + vals[n]
        return y

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        vals = {"input": x_seq}
        for name, mod in self.layers.items():
            vals[name] = mod(self._sum(vals, self.inputs[name]))
        return self._sum(vals, self.output)


# ----------------------------------------------------------------------------------------------- tracing
_IDENTITY_FNS = {"contiguous", "to", "float", "double", "clone", "detach", "type_as", "requires_grad_"}
_ADD_FNS = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_MUL_FNS = {"mul", "__mul__", "__rmul__", "__imul__", "mul_"}
_FLATTEN_FNS = {"flatten", "reshape", "view"}
_LEAVES = (BaseNeuron, TimeFold, LI, Scale, nn.Linear, nn.Conv1d, nn.Conv2d, nn.Flatten, nn.AvgPool2d,
           nn.MaxPool2d, nn.Identity, nn.Dropout, nn.modules.batchnorm._BatchNorm, NIRNetwork)


def _fn_name(func) -> str:
    name = getattr(func, "__name__", None)
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name or str(func)


class _Graph:
    """What the trace found: per-step-shaped nodes in call order plus who feeds whom."""

    def __init__(self, dt: float, maxpool_as: str):
        self.dt, self.maxpool_as = dt, maxpool_as
        self.nodes: "OrderedDict[str, object]" = OrderedDict()
        self.kinds: dict = {}  # node -> "spike" (binary output) or "analog"
        self.edges: list = []
        self.values: dict = {}  # id(tensor) -> (tensor, tuple of source node names)
        self.depth = 0

    # values ---------------------------------------------------------------------------------------------
    def track(self, t: torch.Tensor, sources: tuple) -> None:
        self.values[id(t)] = (t, sources)

    def sources(self, t) -> tuple | None:
        hit = self.values.get(id(t)) if torch.is_tensor(t) else None
        return None if hit is None or hit[0] is not t else hit[1]

    def add_node(self, name: str, node, sources: tuple, kind: str = "analog") -> tuple:
        base, i = name, 1
        while name in self.nodes or name in ("input", "output"):
            name, i = f"{base}_{i}", i + 1
        self.nodes[name] = node
        self.kinds[name] = kind
        for s in sources:
            if (s, name) in self.edges:
                raise ValueError(f"{name}: the same signal reaches it twice (x + x); write 2 * x instead")
            self.edges.append((s, name))
        return (name,)

    # modules ----------------------------------------------------------------------------------------------
    def module(self, path: str, mod: nn.Module, x_seq: torch.Tensor, out: torch.Tensor, src: tuple) -> tuple:
        step_in = tuple(x_seq.shape[2:])
        if isinstance(mod, TimeFold):
            layers = list(mod.layer) if isinstance(mod.layer, nn.Sequential) else [mod.layer]
            x = torch.zeros(1, *step_in, dtype=x_seq.dtype)
            for i, layer in enumerate(layers):
                sub = path if len(layers) == 1 else f"{path}.{i}"
                with torch.no_grad():
                    y = layer(x)
                src = self.stateless(sub, layer, tuple(x.shape[1:]), tuple(y.shape[1:]), src)
                x = y
            return src
        if isinstance(mod, BaseNeuron):
            return self.neuron(path, mod, tuple(out.shape[2:]), src)
        if isinstance(mod, LI):
            shape = tuple(out.shape[2:])
            k, r, vl = (np.broadcast_to(b.double().numpy(), shape) for b in (mod.k, mod.r, mod.v_leak))
            return self.add_node(path, _nir().LI(tau=self.dt / k, r=r.copy(), v_leak=vl.copy()), src)
        if isinstance(mod, Scale):
            s = np.broadcast_to(mod.scale.numpy(), step_in).astype(np.float32)
            return self.add_node(path, _nir().Scale(scale=s), src)
        if isinstance(mod, NIRNetwork):
            raise ValueError(f"{path}: a NIRNetwork inside the model; export the model it was built from")
        return self.stateless(path, mod, step_in, tuple(out.shape[2:]), src, seq=True)

    def stateless(self, path, layer, shape_in, shape_out, src, seq=False) -> tuple:
        nir = _nir()
        where = f"{path} ({type(layer).__name__})"
        if isinstance(layer, (nn.Identity, nn.Dropout)) or (isinstance(layer, nn.Sequential) and not len(layer)):
            return src
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"{where}: a BatchNorm that could not be folded into the layer before it; NIR has no "
                             "BatchNorm node")
        if seq and not isinstance(layer, nn.Linear):
            raise ValueError(f"{where}: applied to a [T, B, ...] sequence without TimeFold; wrap it in "
                             "spikeforge.layers.TimeFold")
        if isinstance(layer, nn.Linear):
            w = _arr(layer.weight)
            node = nir.Affine(weight=w, bias=_arr(layer.bias)) if layer.bias is not None else nir.Linear(weight=w)
            return self.add_node(path, node, src)
        if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
            if layer.padding_mode != "zeros":
                raise ValueError(f"{where}: padding_mode={layer.padding_mode!r}; NIR convolutions pad with zeros")
            two = isinstance(layer, nn.Conv2d)
            b = _arr(layer.bias) if layer.bias is not None else np.zeros(layer.out_channels, dtype=np.float32)
            pad = layer.padding if isinstance(layer.padding, str) else (tuple(layer.padding) if two
                                                                        else layer.padding[0])
            args = dict(weight=_arr(layer.weight), stride=tuple(layer.stride) if two else layer.stride[0],
                        padding=pad, dilation=tuple(layer.dilation) if two else layer.dilation[0],
                        groups=layer.groups, bias=b)
            node = (nir.Conv2d(input_shape=shape_in[1:], **args) if two
                    else nir.Conv1d(input_shape=shape_in[1], **args))
            return self.add_node(path, node, src)
        if isinstance(layer, nn.Flatten):
            start, end = _step_dim(layer.start_dim, len(shape_in), where), layer.end_dim
            end = end if end < 0 else _step_dim(end, len(shape_in), where)
            return self.add_node(path, nir.Flatten(input_type={"input": np.array(shape_in)}, start_dim=start,
                                                   end_dim=end), src)
        if isinstance(layer, nn.AvgPool2d):
            if layer.ceil_mode or layer.divisor_override is not None or not layer.count_include_pad:
                raise ValueError(f"{where}: only ceil_mode=False, count_include_pad=True, no divisor_override "
                                 "(NIR AvgPool2d divides by the window size)")
            k, s, p = (_pair2(v) for v in (layer.kernel_size, layer.stride, layer.padding))
            return self.add_node(path, nir.AvgPool2d(kernel_size=k, stride=s, padding=p), src)
        if isinstance(layer, (nn.MaxPool2d, _SfMaxPool2d)):
            return self.maxpool(path, layer, shape_out, src)
        raise ValueError(f"{where}: NIR cannot express this layer; supported: {', '.join(SUPPORTED_LAYERS)}")

    def maxpool(self, path, layer, shape_out, src) -> tuple:
        nir = _nir()
        where = f"{path} ({type(layer).__name__})"
        if len(src) != 1 or self.kinds.get(src[0]) != "spike":
            raise ValueError(f"{where}: NIR has no max pooling; it is exported (as a pool and a one-step neuron) "
                             "only on the spikes of a hard-reset neuron, but its input is "
                             f"{' + '.join(src) if src else 'the graph input'}")
        if layer.ceil_mode or layer.return_indices or _pair2(layer.dilation).tolist() != [1, 1]:
            raise ValueError(f"{where}: only dilation 1, ceil_mode=False, return_indices=False")
        k, s, p = (_pair2(v) for v in (layer.kernel_size, layer.stride, layer.padding))
        theta = 0.5 if self.maxpool_as == "sum" else 0.5 / float(k[0] * k[1])
        pool = (nir.SumPool2d if self.maxpool_as == "sum" else nir.AvgPool2d)(kernel_size=k, stride=s, padding=p)
        src = self.add_node(f"{path}.pool", pool, src)
        ones = np.ones(shape_out)
        lif = nir.LIF(tau=ones * self.dt, r=ones.copy(), v_leak=ones * 0.0, v_threshold=ones * theta,
                      v_reset=ones * 0.0)
        return self.add_node(f"{path}.any", lif, src, kind="spike")

    def neuron(self, path, mod, shape, src) -> tuple:
        nir = _nir()
        where = f"{path} ({type(mod).__name__})"
        if type(mod) not in (IF, LIF, PLIF):
            raise ValueError(f"{where}: NIR cannot express this neuron; supported: IF, LIF, PLIF (hard reset)")
        if mod.v_reset is None:
            raise ValueError(f"{where}: v_reset=None (soft reset, subtract the threshold) cannot be expressed in NIR "
                             "1.0, whose IF/LIF reset to v_reset; use a hard reset (v_reset=0.0)")
        th = np.full(shape, float(mod.v_threshold))
        vr = np.full(shape, float(mod.v_reset))
        if type(mod) is IF:
            return self.add_node(path, nir.IF(r=np.full(shape, 1.0 / self.dt), v_threshold=th, v_reset=vr), src,
                                 kind="spike")
        if type(mod) is PLIF:
            k = torch.sigmoid(mod.w.detach()).double()
            if mod.num_channels is not None:
                k = k.reshape(-1, *([1] * (len(shape) - 1)))
            tau = np.broadcast_to((1.0 / k).numpy(), shape).copy()
        else:
            tau = np.full(shape, float(mod.tau))
        r = np.ones(shape) if mod.decay_input else tau.copy()
        node = nir.LIF(tau=tau * self.dt, r=r, v_leak=vr.copy(), v_threshold=th, v_reset=vr)
        return self.add_node(path, node, src, kind="spike")

    # functions at the model level -------------------------------------------------------------------------
    def function(self, func, args, kwargs, out) -> None:
        flat = [a for a in (*args, *kwargs.values())]
        tracked = [a for a in flat if self.sources(a) is not None]
        if not tracked:
            return
        if not torch.is_tensor(out):
            if isinstance(out, (tuple, list)) and any(torch.is_tensor(o) for o in out):
                raise ValueError(f"{_fn_name(func)}: splits a signal into several tensors; NIR has no such node")
            return  # a shape, dim(), stride(): metadata
        name = _fn_name(func)
        if name in _IDENTITY_FNS and out.shape == tracked[0].shape:
            self.track(out, self.sources(tracked[0]))
            return
        if name in _ADD_FNS:
            if len(tracked) == 2 and "alpha" not in kwargs:
                a, b = (self.sources(t) for t in tracked)
                if set(a) & set(b):
                    raise ValueError(f"{name}: adds a signal to itself ({', '.join(set(a) & set(b))}); NIR sums "
                                     "distinct edges only")
                self.track(out, a + b)
                return
            raise ValueError(f"{name}: adds a constant to a signal; NIR has no bias node outside Affine/Conv")
        if name in _MUL_FNS and len(tracked) == 1:
            other = [a for a in args if a is not tracked[0]]
            c = other[0] if other else None
            if isinstance(c, (int, float)) or (torch.is_tensor(c) and self.sources(c) is None):
                shape = tuple(out.shape[2:])
                s = np.broadcast_to(np.asarray(torch.as_tensor(c, dtype=torch.float32).detach().cpu()), shape)
                src = self.add_node(f"scale_{len(self.nodes)}", _nir().Scale(scale=s.astype(np.float32).copy()),
                                    self.sources(tracked[0]))
                self.track(out, src)
                return
        if name in _MUL_FNS:
            raise ValueError(f"{name}: multiplies two signals (e.g. SEW AND/IAND); NIR has no product node")
        if name in _FLATTEN_FNS:
            x = tracked[0]
            if out.dim() >= 2 and tuple(out.shape[:2]) == tuple(x.shape[:2]):
                start, end = _flatten_dims(tuple(x.shape[2:]), tuple(out.shape[2:]))
                if start is not None:
                    node = _nir().Flatten(input_type={"input": np.array(x.shape[2:])}, start_dim=start,
                                          end_dim=end)
                    self.track(out, self.add_node(f"flatten_{len(self.nodes)}", node, self.sources(x)))
                    return
            raise ValueError(f"{name}: reshapes {tuple(x.shape)} to {tuple(out.shape)}; only flattening dims of one "
                             "step ([T, B, ...] kept) is a NIR Flatten")
        raise ValueError(f"{name}: NIR cannot express this operation on a signal; supported: "
                         f"{', '.join(SUPPORTED_LAYERS)}")


def _arr(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _pair2(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _step_dim(d: int, ndim_step: int, where: str) -> int:
    """A torch dim of ``[N, *step]`` as a dim of one step (NIR counts without the batch)."""
    if d < 0:
        d += ndim_step + 1
    if d < 1:
        raise ValueError(f"{where}: flattens the batch dimension")
    return d - 1


def _flatten_dims(shape_in: tuple, shape_out: tuple):
    """``(start, end)`` such that flattening ``shape_in[start:end+1]`` gives ``shape_out``, else ``(None, None)``."""
    n = len(shape_in) - len(shape_out)
    for start in range(len(shape_out)):
        end = start + n
        if (shape_in[:start] == shape_out[:start] and shape_in[end + 1:] == shape_out[start + 1:]
                and math.prod(shape_in[start:end + 1]) == shape_out[start]):
            return start, (-1 if end == len(shape_in) - 1 else end)
    return None, None


class _Mode(TorchFunctionMode):
    def __init__(self, g: _Graph):
        super().__init__()
        self.g = g

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.g.depth == 0:
            self.g.function(func, args, kwargs, out)
        return out


def _is_leaf(m: nn.Module) -> bool:
    return isinstance(m, _LEAVES) or next(m.children(), None) is None


def to_nir(model: nn.Module, sample_input: torch.Tensor, dt: float = 1.0, *, maxpool_as: str = "sum"):
    """The NIR graph of ``model`` (eval mode, BatchNorm folded), traced on ``sample_input``.

    ``sample_input``: what ``model`` takes -- for a zoo model a static batch ``[B, ...]`` (encoded by its
    ``direct`` encoder) or a sequence ``[T, B, ...]``; for any other module a sequence ``[T, B, ...]``.  The graph's
    input is one step (``[...]``, no batch), its output the model's output at one step.  ``dt``: the step length
    the continuous NIR parameters are written for (see the module docstring).  ``maxpool_as``: ``"sum"``
    (SumPool2d, what Norse reads) or ``"avg"`` (AvgPool2d, what snnTorch reads) for max pooling of spikes.
    """
    nir = _nir()
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0 or not math.isfinite(dt):
        raise ValueError(f"dt: expected a finite number > 0 (the step length), got {dt!r}")
    if maxpool_as not in MAXPOOL_AS:
        raise ValueError(f"maxpool_as: unknown value {maxpool_as!r}; allowed: {', '.join(MAXPOOL_AS)}")
    if not torch.is_tensor(sample_input):
        raise ValueError(f"sample_input: expected a tensor, got {type(sample_input).__name__}")
    from ...convert.fold import fold_batchnorm
    from ...models.base import SpikingModel

    net = fold_batchnorm(copy.deepcopy(model).eval()).cpu()
    x = sample_input.detach().cpu()
    if isinstance(net, SpikingModel):
        if x.dim() == net.static_ndim and net.encoder != "direct":
            raise ValueError(f"sample_input: the model encodes static input with {net.encoder!r}; NIR has no "
                             "encoder node: pass the encoded sequence [T, B, ...]")
        x = net.to_sequence(x)
        run = net.forward_seq
    else:
        run = net
    if x.dim() < 3:
        raise ValueError(f"sample_input: expected a time-major sequence [T, B, ...], got shape {tuple(x.shape)}")
    x = x.contiguous()
    g = _Graph(float(dt), maxpool_as)
    g.track(x, ("input",))
    g.kinds["input"] = "analog"
    handles, names = [], {}
    for path, m in net.named_modules():
        if path and _is_leaf(m) and not any(path.startswith(p + ".") for p in names.values()):
            names[m] = path

    def pre(m, args):
        if g.depth == 0:
            m._nir_in = args[0] if args else None
        g.depth += 1

    def post(m, args, out):
        g.depth -= 1
        if g.depth == 0:
            x_in = m._nir_in
            del m._nir_in
            src = g.sources(x_in)
            if src is None:
                raise ValueError(f"{names[m]} ({type(m).__name__}): its input does not come from the model input "
                                 "through layers NIR can express")
            if not torch.is_tensor(out):
                raise ValueError(f"{names[m]} ({type(m).__name__}): returns {type(out).__name__}, not a tensor")
            g.track(out, g.module(names[m], m, x_in, out, src))

    for m in names:
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.no_grad(), _Mode(g):
            y = run(x)
    finally:
        for h in handles:
            h.remove()
    src = g.sources(y)
    if src is None:
        raise ValueError("model output: not traced to the input through layers NIR can express")
    nodes = {"input": nir.Input(input_type={"input": np.array(x.shape[2:])}), **g.nodes,
             "output": nir.Output(output_type={"output": np.array(y.shape[2:])})}
    edges = [(a, b) for a, b in g.edges] + [(s, "output") for s in src]
    meta = {"source": "spikeforge", "dt": float(dt)}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


# ------------------------------------------------------------------------------------------------ import
def _uniform(node_name: str, field: str, a, allow_array: bool = False):
    a = np.asarray(a, dtype=np.float64)
    if a.size and np.all(a == a.flat[0]):
        return float(a.flat[0])
    if allow_array:
        return a
    raise ValueError(f"{node_name}: {field} differs between neurons; spikeforge's neuron needs one value per layer")


def _lif_module(name: str, tau, r, v_leak, v_threshold, v_reset, dt: float) -> nn.Module:
    """spikeforge LIF for NIR LIF parameters (with a Scale in front when R is neither 1 nor tau/dt)."""
    tau_sf = _uniform(name, "tau", tau) / dt
    if tau_sf < 1.0:
        raise ValueError(f"{name}: tau = {tau_sf * dt:g} is shorter than dt = {dt:g}; spikeforge's LIF needs "
                         "tau >= dt (a decay of at most one step)")
    th, vr, vl = (_uniform(name, f, v) for f, v in (("v_threshold", v_threshold), ("v_reset", v_reset),
                                                     ("v_leak", v_leak)))
    if vl != vr:
        raise ValueError(f"{name}: v_leak = {vl:g} differs from v_reset = {vr:g}; spikeforge's LIF decays towards "
                         "v_reset")
    if th <= 0:
        raise ValueError(f"{name}: v_threshold = {th:g}; spikeforge needs a threshold > 0")
    r = np.asarray(r, dtype=np.float64)
    if np.all(r == 1.0):
        return LIF(tau=tau_sf, v_threshold=th, v_reset=vr, decay_input=True)
    if np.allclose(r, tau_sf, rtol=1e-12, atol=0.0):
        return LIF(tau=tau_sf, v_threshold=th, v_reset=vr, decay_input=False)
    return nn.Sequential(Scale(r), LIF(tau=tau_sf, v_threshold=th, v_reset=vr, decay_input=True))


def _node_module(name: str, node, dt: float) -> nn.Module:
    nir = _nir()
    t = type(node)
    if t is nir.Affine or t is nir.Linear:
        w = np.asarray(node.weight)
        if w.ndim != 2:
            raise ValueError(f"{name}: {t.__name__} weight of shape {w.shape}; expected [out, in]")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=t is nir.Affine)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w))
            if t is nir.Affine:
                lin.bias.copy_(torch.as_tensor(np.asarray(node.bias)))
        return TimeFold(lin)
    if t is nir.Conv1d or t is nir.Conv2d:
        w = np.asarray(node.weight)
        two = t is nir.Conv2d
        if w.ndim != (4 if two else 3):
            raise ValueError(f"{name}: {t.__name__} weight of shape {w.shape}; expected {4 if two else 3} dims")
        cls = nn.Conv2d if two else nn.Conv1d
        pad = node.padding if isinstance(node.padding, str) else _ints(node.padding)
        conv = cls(w.shape[1] * node.groups, w.shape[0], tuple(w.shape[2:]), stride=_ints(node.stride),
                   padding=pad, dilation=_ints(node.dilation), groups=int(node.groups))
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(w))
            conv.bias.copy_(torch.as_tensor(np.asarray(node.bias)))
        return TimeFold(conv)
    if t is nir.Flatten:
        end = int(node.end_dim)
        return TimeFold(nn.Flatten(int(node.start_dim) + 1, end if end < 0 else end + 1))
    if t is nir.SumPool2d or t is nir.AvgPool2d:
        k, s, p = (_ints(v) for v in (node.kernel_size, node.stride, node.padding))
        return TimeFold(nn.AvgPool2d(k, s, p, divisor_override=1 if t is nir.SumPool2d else None))
    if t is nir.Scale:
        return Scale(node.scale)
    if t is nir.IF:
        th, vr = _uniform(name, "v_threshold", node.v_threshold), _uniform(name, "v_reset", node.v_reset)
        gain = np.asarray(node.r, dtype=np.float64) * dt
        neuron = IF(v_threshold=th, v_reset=vr)
        return neuron if np.all(gain == 1.0) else nn.Sequential(Scale(gain), neuron)
    if t is nir.LIF:
        return _lif_module(name, node.tau, node.r, node.v_leak, node.v_threshold, node.v_reset, dt)
    if t is nir.CubaLIF:
        if not np.allclose(np.asarray(node.tau_syn, dtype=np.float64), dt, rtol=1e-12, atol=0.0):
            raise ValueError(f"{name}: CubaLIF with tau_syn != dt (a synaptic current with memory) has no spikeforge "
                             "neuron; only tau_syn = dt (I_t = w_in x_t) imports, as an LIF")
        lif = _lif_module(name, node.tau_mem, node.r, node.v_leak, node.v_threshold, node.v_reset, dt)
        w_in = np.asarray(node.w_in, dtype=np.float64)
        return lif if np.all(w_in == 1.0) else nn.Sequential(Scale(w_in), lif)
    if t is nir.LI:
        return LI(dt / np.asarray(node.tau, dtype=np.float64), node.r, node.v_leak)
    raise ValueError(f"{name}: unknown node type {t.__name__}; supported: {', '.join(SUPPORTED_NODES)}")


def _ints(v):
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return a[0] if len(a) == 1 else tuple(a)


def _shape(types: dict | None):
    if not types:
        return None
    v = next(iter(types.values()))
    return None if v is None else tuple(int(d) for d in np.atleast_1d(v))


def from_nir(graph, dt: float | None = None) -> NIRNetwork:
    """A spikeforge module running NIR ``graph`` (a ``nir.NIRGraph`` or a ``.nir`` path) on ``[T, B, ...]``.

    ``dt``: the step length to discretise with (default: the ``dt`` stored by :func:`to_nir`, else 1.0).  Errors
    name the node: an unknown node type, parameters spikeforge's neurons cannot hold, shapes that do not chain.
    """
    nir = _nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = load_nir(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"graph: expected a nir.NIRGraph or a path to a .nir file, got {type(graph).__name__}")
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    dt = float(meta.get("dt", 1.0)) if dt is None else dt
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not dt > 0:
        raise ValueError(f"dt: expected a number > 0, got {dt!r}")
    ins = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(f"graph: expected one Input and one Output node, got inputs {ins} and outputs {outs}")
    for a, b in graph.edges:
        for n in (a, b):
            if n not in graph.nodes:
                raise ValueError(f"edge ({a!r}, {b!r}): node {n!r} is not in the graph")
    feeds = {n: [a for a, b in graph.edges if b == n] for n in graph.nodes}
    for n, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise ValueError(f"{n}: nested graph (e.g. a recurrent subgraph); spikeforge imports feed-forward graphs")
        if not isinstance(node, nir.Input) and not feeds[n]:
            raise ValueError(f"{n}: {type(node).__name__} node has no input edge")
    # topological order (a cycle is a recurrent connection)
    order, done = [], {ins[0]}
    pending = [n for n in graph.nodes if n not in (ins[0], outs[0])]
    while pending:
        ready = [n for n in pending if all(a in done for a in feeds[n])]
        if not ready:
            raise ValueError(f"graph: nodes {sorted(pending)} form a cycle (recurrent connection) or are fed by one; "
                             "spikeforge imports feed-forward graphs")
        for n in ready:
            order.append(n)
            done.add(n)
        pending = [n for n in pending if n not in done]

    def key(n):
        return "input" if n == ins[0] else n.replace(".", "_")

    layers = OrderedDict((key(n), _node_module(n, graph.nodes[n], dt)) for n in order)
    net = NIRNetwork(layers, {key(n): [key(a) for a in feeds[n]] for n in order}, [key(a) for a in feeds[outs[0]]],
                     dt)
    _check_shapes(graph, ins[0], order, feeds, net)
    return net


def _check_shapes(graph, inp: str, order: list, feeds: dict, net: NIRNetwork) -> None:
    """Run one zero step through the network node by node; a shape that does not chain names the edge."""
    shape = _shape(graph.nodes[inp].input_type) or _shape(graph.nodes[inp].output_type)
    if shape is None:
        raise ValueError(f"{inp}: Input node without a shape")
    vals = {"input": torch.zeros(1, 1, *shape)}
    names = {n: ("input" if n == inp else n.replace(".", "_")) for n in graph.nodes}
    with torch.no_grad():
        for n in order:
            srcs = [names[a] for a in feeds[n]]
            shapes = {a: tuple(vals[names[a]].shape[2:]) for a in feeds[n]}
            if len(set(shapes.values())) > 1:
                raise ValueError(f"{n}: inputs of different shapes are summed: {shapes}")
            want = _shape(graph.nodes[n].input_type)
            got = next(iter(shapes.values()))
            if want is not None and want != got:
                raise ValueError(f"{n}: declared input shape {want} but {', '.join(feeds[n])} gives {got}")
            try:
                vals[names[n]] = net.layers[names[n]](NIRNetwork._sum(vals, srcs))
            except (RuntimeError, ValueError) as e:
                raise ValueError(f"{n} ({type(graph.nodes[n]).__name__}): does not accept its input of shape "
                                 f"{got}: {str(e).splitlines()[0]}") from None


# ------------------------------------------------------------------------------------------------- files
def save_nir(graph, path) -> None:
    """Write ``graph`` to ``path`` (HDF5, NIR's file format)."""
    _nir().write(os.fspath(path), graph)


def load_nir(path):
    """Read a ``.nir`` file; a missing, truncated or foreign file raises an error naming it."""
    nir = _nir()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such NIR file")
    try:
        return nir.read(path, type_check=False)
    except Exception as e:  # h5py / nir raise OSError, KeyError, ValueError... for a bad file
        reason = str(e).splitlines()[0] if str(e) else ""
        raise ValueError(f"{path}: not a readable NIR file ({type(e).__name__}: {reason})") from None
