r"""``convert(ann, ConversionConfig, calibration_data) -> snn``: an ANN of Conv/Linear/BatchNorm/ReLU-like
activations/pooling/flatten/dropout/residual additions becomes an IF network.

Steps: (1) every BatchNorm is folded into the layer before it (:func:`~spikeforge.convert.fold_batchnorm`);
(2) a zoo ANN twin (``model.neuron=relu|clip|qcfs``) keeps its own forward code; any other ``nn.Module`` is traced
with ``torch.fx``, every node is checked (one ``ValueError`` names the first it cannot convert: ``F.gelu``,
``sigmoid``, an LSTM, ...) and functional ReLUs become modules; (3) each activation's threshold
:math:`\theta` is measured on the calibration data (``max`` / ``percentile``, per layer or per channel) or read
from the activation (``bound``: TCL's and QCFS's :math:`\lambda`); (4) each activation becomes a
:class:`ThresholdIF`, :math:`y_t = \theta\,\mathrm{IF}(x_t/\theta)` (threshold 1, soft reset, membrane starting at
``v_init``), whose rate times :math:`\theta` approaches :math:`\mathrm{clip}(x, 0, \theta)` as T grows.

The result is a :class:`~spikeforge.models.SpikingModel` (``snn(x) -> [T, B, K]``, ``snn.T`` steps): it trains,
evaluates and counts spikes like any other (the IF neurons are ordinary spikeforge neurons).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.convert import ConversionConfig, convert
    >>> ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    >>> x = torch.rand(64, 1, 4, 4)
    >>> snn = convert(ann, ConversionConfig(T=64), calibration_data=x)
    >>> tuple(snn(x[:5]).shape)
    (64, 5, 3)
"""

from __future__ import annotations

import copy
import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MaxPool2d, TimeFold, fold, unfold
from ..models._common import SeqDropout
from ..models.base import SpikingModel
from ..neurons.activations import ACTIVATIONS, Clip, QCFS
from ..neurons.base import BaseNeuron
from ..neurons.lif import IF
from ..neurons.noisy_if import NoisyIF
from .config import ConversionConfig
from .fold import FOLDABLE_BN, UNFOLDABLE_BN, fold_batchnorm
from .lipool import LIPool2d
from .spicalib import spicalib

MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, MaxPool2d)
#: layers the converted network runs unchanged (linear in their input, or max pooling)
PASS_THROUGH = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Unflatten,
                nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, SeqDropout) + MAXPOOLS
_LINEAR_FUNCTIONS = {operator.add, operator.iadd, torch.add, torch.flatten, torch.cat, operator.getitem,
                     F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                     F.adaptive_avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.dropout, torch.mean,
                     torch.sum, torch.reshape}
_RELU_FUNCTIONS = {F.relu, torch.relu, F.relu6}
_SCALAR_FUNCTIONS = {operator.mul, operator.truediv, torch.mul}
_METHODS = {"view", "reshape", "flatten", "size", "add", "__add__", "contiguous", "mean", "sum", "unsqueeze",
            "squeeze", "permute", "transpose", "relu", "dim"}


class ThresholdIF(nn.Module):
    r""":math:`y_t = \theta\, s_t`, :math:`s = \mathrm{IF}(x/\theta)` (threshold 1, soft reset, initial membrane
    ``v_init``); ``theta`` is a scalar or one value per channel (dim 2 of ``[T, B, C, ...]``).  With
    ``allowance`` the spikes pass through :func:`~spikeforge.convert.spicalib.spicalib` first.  The IF neuron is
    the child ``neuron`` (monitors count its 0/1 spikes)."""

    def __init__(self, theta: torch.Tensor, v_init: float = 0.0, allowance: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        theta = torch.as_tensor(theta, dtype=torch.float32).detach().clone()
        if theta.dim() > 1 or not bool((theta > 0).all()):
            raise ValueError(f"theta: expected positive thresholds, a scalar or one per channel, got {theta}")
        self.register_buffer("theta", theta)
        self.allowance = allowance
        self.backend = backend
        self.set_v_init(v_init)

    def set_v_init(self, v_init: float) -> None:
        """Start the membrane at ``v_init`` (in units of theta) from now on."""
        self.v_init = float(v_init)
        self.neuron = IF(v_threshold=1.0, v_reset=None, backend=self.backend) if self.v_init == 0.0 else \
            NoisyIF(sigma=0.0, v_threshold=1.0, v_init=self.v_init, backend=self.backend)

    def _theta(self, x_seq):
        th = self.theta.to(x_seq.dtype)
        if th.dim() == 0:
            return th
        if x_seq.dim() < 3 or x_seq.shape[2] != th.shape[0]:
            raise ValueError(f"x_seq: ThresholdIF with {th.shape[0]} channel thresholds expects [T, B, C, ...] "
                             f"with C={th.shape[0]}, got shape {tuple(x_seq.shape)}")
        return th.reshape(-1, *([1] * (x_seq.dim() - 3)))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        th = self._theta(x_seq)
        s = self.neuron(x_seq / th)
        if self.allowance is not None:
            s = spicalib(s, self.allowance)
        return s * th

    def extra_repr(self) -> str:
        th = self.theta
        what = f"{float(th):.4g}" if th.dim() == 0 else f"per channel [{th.shape[0]}], mean {float(th.mean()):.4g}"
        return f"theta={what}, v_init={self.v_init}, spicalib={self.allowance}"


class ConvertedSNN(SpikingModel):
    """A traced ANN run as an SNN: stateless layers on ``[T*B, ...]``, IF sites (and LIPool) on ``[T, B, ...]``;
    ``net`` is the rewritten ``torch.fx.GraphModule``."""

    channels_last = False

    def __init__(self, net: nn.Module, num_classes: int, in_channels: int, T: int, static_ndim: int):
        super().__init__(num_classes, in_channels, T, "direct", static_ndim)
        self.net = net

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.net(x_seq)


# --------------------------------------------------------------------------------------------- preparing the ANN
def _is_activation(m) -> bool:
    return isinstance(m, ACTIVATIONS)


def _check_ann(ann) -> None:
    if not isinstance(ann, nn.Module):
        raise ValueError(f"ann: expected a torch nn.Module (an ANN), got {type(ann).__name__}")
    for name, m in ann.named_modules():
        if isinstance(m, BaseNeuron):
            raise ValueError(f"ann: {type(ann).__name__} is already spiking ({type(m).__name__} neuron at {name}); "
                             "convert() takes an ANN: build the zoo model with model.neuron=relu (or clip, qcfs)")


def prepare_ann(ann: nn.Module) -> tuple[nn.Module, bool]:
    """``(net, zoo)``: the ANN with BatchNorm folded, in eval mode; a non-zoo module is traced and checked, with
    functional ReLUs as modules.  ``net``'s activation modules are the conversion sites (same names in the SNN)."""
    _check_ann(ann)
    zoo = isinstance(ann, SpikingModel)
    net = fold_batchnorm(ann)
    if zoo:
        _check_zoo_layers(net)
    else:
        net = _trace_and_check(net)
    if not any(_is_activation(m) for m in net.modules()):
        raise ValueError(f"ann: {type(ann).__name__} has no ReLU-like activation (relu, clip, qcfs, nn.ReLU) to "
                         "turn into IF neurons")
    return net.eval(), zoo


def _check_zoo_layers(net) -> None:
    for name, m in net.named_modules():
        if any(True for _ in m.children()) or isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) \
                or _is_activation(m) or isinstance(m, PASS_THROUGH):
            continue
        if isinstance(m, FOLDABLE_BN + UNFOLDABLE_BN):
            continue  # fold_batchnorm already removed or refused them
        raise ValueError(f"convert: layer {name} ({type(m).__name__}) is not supported; allowed: convolution, "
                         "linear, BatchNorm, ReLU-like activations, average/max pooling, flatten, dropout")


def _unsupported(node, why: str):
    tgt = getattr(node.target, "__name__", node.target)
    return ValueError(f"convert: node {node.name} ({node.op} {tgt}) is not supported: {why}; allowed: "
                      "convolution, linear, BatchNorm, ReLU-like activations, average/max pooling, flatten, "
                      "dropout, residual additions")


def _trace_and_check(net: nn.Module):
    import torch.fx as fx

    try:
        gm = net if isinstance(net, fx.GraphModule) else fx.symbolic_trace(net)
    except Exception as e:  # fx raises many types (TraceError, TypeError, ...): one message naming the reason
        raise ValueError(f"convert: torch.fx cannot trace {type(net).__name__} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); convert() needs a traceable module "
                         "(no data-dependent control flow)") from None
    mods = dict(gm.named_modules())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"convert: the ANN takes {len(placeholders)} inputs; allowed: exactly one")
    k = 0
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            m = mods[node.target]
            if not (_is_activation(m) or isinstance(m, PASS_THROUGH)):
                raise _unsupported(node, f"{type(m).__name__} is not a ReLU-like or linear layer")
        elif node.op == "call_function":
            if node.target in _RELU_FUNCTIONS:
                k += 1
                name = f"relu_fn{k}"
                gm.add_submodule(name, nn.ReLU6() if node.target is F.relu6 else nn.ReLU())
                with gm.graph.inserting_before(node):
                    new = gm.graph.call_module(name, (node.args[0],))
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
            elif node.target in _SCALAR_FUNCTIONS:
                if sum(isinstance(a, fx.Node) for a in node.args) > 1:
                    raise _unsupported(node, "a product of two activations is not linear")
            elif node.target not in _LINEAR_FUNCTIONS:
                raise _unsupported(node, "not linear in its input and not a ReLU")
        elif node.op == "call_method":
            if node.target == "relu":
                k += 1
                name = f"relu_fn{k}"
                gm.add_submodule(name, nn.ReLU())
                with gm.graph.inserting_before(node):
                    new = gm.graph.call_module(name, (node.args[0],))
                node.replace_all_uses_with(new)
                gm.graph.erase_node(node)
            elif node.target not in _METHODS:
                raise _unsupported(node, "not linear in its input and not a ReLU")
    gm.graph.lint()
    gm.recompile()
    return gm


# --------------------------------------------------------------------------------------------- calibration
def _batches(data, limit: int):
    """Tensors ``x`` from a tensor ``[N, ...]`` or an iterable of tensors / ``(x, y)`` pairs."""
    if torch.is_tensor(data):
        if data.shape[0] == 0:
            raise ValueError(f"calibration_data: an empty tensor of shape {tuple(data.shape)}; allowed: at least "
                             "one sample")
        bs = 256
        for i in range(0, min(data.shape[0], bs * limit), bs):
            yield data[i:i + bs]
        return
    n = 0
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not torch.is_tensor(x):
            raise ValueError(f"calibration_data: batches must be tensors or (x, y) pairs, got {type(x).__name__}")
        if x.shape[0] == 0:
            continue
        yield x
        n += 1
        if n >= limit:
            break
    if n == 0:
        raise ValueError("calibration_data: the calibration set is empty; allowed: a tensor [N, ...] or an "
                         "iterable of batches with N >= 1 samples")


def _expected_input(net, zoo):
    """``(ndim, channels, size)`` the ANN expects, where known (for a clear error on wrong-shape data)."""
    if zoo:
        return net.static_ndim, net.in_channels, getattr(net, "input_size", None)
    for m in net.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.weight.dim(), m.in_channels, None
        if isinstance(m, nn.Linear):
            return None, None, None
    return None, None, None


def _run_ann(net, x, zoo):
    try:
        return net(x)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"calibration_data: a batch of shape {tuple(x.shape)} does not fit the ANN "
                         f"({str(e).splitlines()[0]})") from None


def _check_batch(x, expect):
    nd, c, size = expect
    if not x.is_floating_point():
        raise ValueError(f"calibration_data: dtype {x.dtype}; allowed: floating-point inputs")
    if nd is not None and (x.dim() != nd or x.shape[1] != c or (size and tuple(x.shape[-2:]) != (size, size))):
        want = f"[N, {c}" + (f", {size}, {size}]" if size else ", ...]")
        raise ValueError(f"calibration_data: batch of shape {tuple(x.shape)}; the ANN expects {want} "
                         f"({nd} dims)")


def _site_channel_dim(zoo: bool) -> int:
    return 2 if zoo else 1  # zoo sites see [T, B, C, ...]; a traced ANN's see [B, C, ...]


@torch.no_grad()
def calibrate(net: nn.Module, zoo: bool, data, cfg: ConversionConfig) -> dict[str, torch.Tensor]:
    """``{site: theta}`` for every activation of the prepared ANN ``net`` (module docstring, step 3)."""
    sites = {n: m for n, m in net.named_modules() if _is_activation(m)}
    if cfg.norm == "bound":
        out = {}
        for n, m in sites.items():
            b = m.bound() if isinstance(m, (Clip, QCFS)) else (torch.tensor(6.0) if isinstance(m, nn.ReLU6) else None)
            if b is None:
                raise ValueError(f"norm: 'bound' needs activations with a bound (clip, qcfs); {n} is "
                                 f"{type(m).__name__}; use norm='max' or 'percentile' with calibration data")
            out[n] = b.float().clone()
        return out
    if data is None:
        raise ValueError(f"calibration_data: None, but norm={cfg.norm!r} measures thresholds on data; give a "
                         "tensor [N, ...] or an iterable of batches (or use norm='bound')")
    cd = _site_channel_dim(zoo)
    gen = torch.Generator().manual_seed(cfg.seed)
    maxes: dict[str, torch.Tensor] = {}
    samples: dict[str, list] = {n: [] for n in sites}
    per_batch = max(1, cfg.calib_values // max(1, cfg.calib_batches))
    quant = cfg.percentile < 100.0

    def hook(name):
        def h(mod, inp, y):
            y = y.detach().float()
            c = y.movedim(cd, 0).reshape(y.shape[cd], -1) if cfg.per_channel else y.reshape(1, -1)
            mx = c.amax(1)
            maxes[name] = mx if name not in maxes else torch.maximum(maxes[name], mx)
            if quant:
                k = min(c.shape[1], max(1, per_batch // c.shape[0]))
                idx = torch.randperm(c.shape[1], generator=gen)[:k].to(c.device)
                samples[name].append(c[:, idx].cpu())
        return h

    handles = [m.register_forward_hook(hook(n)) for n, m in sites.items()]
    expect = _expected_input(net, zoo)
    try:
        for x in _batches(data, cfg.calib_batches):
            _check_batch(x, expect)
            _run_ann(net, x.to(next(net.parameters()).device), zoo)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for n in sites:
        th = maxes[n]
        if quant:
            vals = torch.cat(samples[n], 1)
            th = torch.quantile(vals, cfg.percentile / 100.0, dim=1) if vals.shape[1] > 1 else vals[:, 0]
        layer_max = float(maxes[n].max())
        if layer_max <= 0:
            raise ValueError(f"ann: activation {n} is never positive on the calibration data (threshold 0): is the "
                             "ANN trained, and is the calibration data what it was trained on?")
        th = torch.where(th > 0, th, torch.full_like(th, layer_max))  # silent channels: the layer's threshold
        out[n] = th.reshape(()) if not cfg.per_channel else th
    return out


# --------------------------------------------------------------------------------------------- building the SNN
def _set(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def build_snn(net: nn.Module, zoo: bool, thetas: dict, cfg: ConversionConfig, v_init: dict | None = None,
              example=None) -> SpikingModel:
    """The SNN from the prepared ANN ``net`` and ``{site: theta}`` (``v_init`` per site overrides the config)."""
    snn = copy.deepcopy(net)
    v_init = v_init or {}
    for name, th in thetas.items():
        _set(snn, name, ThresholdIF(th, v_init.get(name, cfg.v_init), cfg.spicalib, cfg.backend))
    if zoo:
        if cfg.maxpool == "lipool":
            for name, m in list(snn.named_modules()):
                if isinstance(m, TimeFold) and isinstance(m.layer, MAXPOOLS):
                    _set(snn, name, LIPool2d.from_maxpool(m.layer, name))
                elif isinstance(m, MAXPOOLS) and not name.endswith(".layer"):
                    raise ValueError(f"maxpool: lipool needs the pooling at {name} wrapped in TimeFold")
        snn.T = cfg.T
        return snn.train(False)
    return _sequence_graph(snn, cfg, example)


def _sequence_graph(gm, cfg: ConversionConfig, example) -> ConvertedSNN:
    mods = dict(gm.named_modules())
    g = gm.graph
    if cfg.maxpool == "lipool":
        for node in list(g.nodes):
            if node.op == "call_module" and isinstance(mods[node.target], MAXPOOLS):
                gm.add_submodule(node.target.replace(".", "_") + "_lipool",
                                 LIPool2d.from_maxpool(mods[node.target], node.name))
                node.target = node.target.replace(".", "_") + "_lipool"
            elif node.op == "call_function" and node.target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
                raise _unsupported(node, "maxpool='lipool' needs max pooling as a module (nn.MaxPool2d)")
        mods = dict(gm.named_modules())
    ph = next(n for n in g.nodes if n.op == "placeholder")
    with g.inserting_after(ph):
        t_node = g.call_method("size", (ph, 0))
    with g.inserting_after(t_node):
        xf = g.call_function(fold, (ph,))
    for user in list(ph.users):
        if user is not t_node and user is not xf:
            user.replace_input_with(ph, xf)
    for node in list(g.nodes):
        if node.op == "call_module" and isinstance(mods[node.target], (ThresholdIF, LIPool2d)):
            with g.inserting_before(node):
                u = g.call_function(unfold, (node.args[0], t_node))
            node.args = (u,) + tuple(node.args[1:])
            with g.inserting_after(node):
                f = g.call_function(fold, (node,))
            node.replace_all_uses_with(f, delete_user_cb=lambda n, f=f: n is not f)
    out = next(n for n in g.nodes if n.op == "output")
    res = out.args[0]
    with g.inserting_before(out):
        u = g.call_function(unfold, (res, t_node))
    out.args = (u,)
    g.lint()
    gm.recompile()
    x = example
    k = int(gm(x[:1].unsqueeze(0)).shape[-1])
    return ConvertedSNN(gm, k, int(x.shape[1]) if x.dim() > 2 else 1, cfg.T, x.dim()).train(False)


def _first_batch(data):
    if data is None:
        return None
    if torch.is_tensor(data):
        return data[:2] if data.shape[0] else None
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if torch.is_tensor(x) and x.shape[0]:
            return x[:2]
    return None


def convert(ann: nn.Module, config: ConversionConfig | None = None, calibration_data=None, *,
            example_input=None) -> SpikingModel:
    """The IF network of ``ann`` (module docstring).  ``calibration_data``: a tensor ``[N, ...]`` of inputs or an
    iterable of batches (tensors or ``(x, y)``); a traced (non-zoo) ANN with ``norm='bound'`` needs
    ``example_input`` (one batch) when no calibration data is given.  ``ann`` is not changed."""
    cfg = config or ConversionConfig()
    if not isinstance(cfg, ConversionConfig):
        raise ValueError(f"config: expected a ConversionConfig, got {type(cfg).__name__}")
    net, zoo = prepare_ann(ann)
    thetas = calibrate(net, zoo, calibration_data, cfg)
    example = example_input if example_input is not None else _first_batch(calibration_data)
    if not zoo and example is None:
        raise ValueError("example_input: None; a traced ANN converted without calibration data needs one input "
                         "batch to size the SNN")
    return build_snn(net, zoo, thetas, cfg, example=example)


def site_names(snn: nn.Module) -> list[str]:
    """The converted sites (:class:`ThresholdIF`) of ``snn``, in order."""
    return [n for n, m in snn.named_modules() if isinstance(m, ThresholdIF)]


__all__ = ["convert", "prepare_ann", "calibrate", "build_snn", "ThresholdIF", "ConvertedSNN", "site_names",
           "PASS_THROUGH"]
