r"""``cat_ttfs``: conversion-aware training (CAT) for a time-to-first-spike (TTFS) SNN with 5-bit log weights (Lew,
Lee, Park, DAC 2022; LOW confidence: the equations are reconstructed from the
paper, not checked against code).

- TTFS value code with ``K`` time bins: a value :math:`a\in[0,1]` (in units of the layer's threshold
  :math:`\theta_l`) is one spike in bin :math:`k = \mathrm{round}(-\log_2 a)\in\{0..K-1\}`, carrying
  :math:`\hat a = 2^{-k}`; :math:`a < 2^{-(K-1)}` is no spike.
- CAT activation (the ANN's): :math:`\varphi(x) = \theta_l\,Q_K(\mathrm{clip}(\mathrm{relu}(x)/\theta_l, 0, 1))`,
  straight-through gradient inside :math:`(0, \theta_l)`.
- Weights: 5-bit logarithmic, :math:`\hat w = \mathrm{sign}(w)\,s_l\,2^{-e}` (:func:`spikeforge.deploy.quant.fake_quant`,
  ``scheme="log2"``, per tensor).
- The TTFS SNN (:func:`ttfs_simulate`) runs layer by layer: a layer's neurons receive, bin by bin, the spikes of
  the layer below (each worth :math:`\theta 2^{-k}`), accumulate :math:`V = \sum_k W(\theta 2^{-k} s_k) + b` and
  fire once, in the bin that codes :math:`\varphi(V)`.  Max pooling keeps the earliest spike of a window, average
  pooling and flattening act on every bin; the input layer takes the analog image, the output layer's :math:`V`
  are the logits.

Exactness (card check 1): behind an activation both the CAT-ANN and the SNN compute
:math:`(\theta s)\sum \pm 2^{-(k+e)} + b`: a sum of powers of two (the multiply-free MAC), then one scale and the
bias.  The powers span at most K - 1 + 14 binary places plus the fan-in's bits, far fewer than float64's 53, so
every partial sum is exact in any order: the CAT-ANN logits and the TTFS simulation are **bit-identical in
float64** (tested).  In float32 they can differ in the last bits: those sums need more than float32's 24-bit
mantissa, and the ANN sums all bins in one convolution while the SNN sums bin by bin, so the roundings differ.

Supported ANNs: ``nn.Sequential`` of Conv2d/Linear/BatchNorm/ReLU/MaxPool2d/AvgPool2d/Flatten/Dropout, and the
zoo ``mlp``/``convnet`` twins (their layers in order, flattened before the first linear layer).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.convert.cat_ttfs import cat_net, ttfs_simulate
    >>> ann = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> x = torch.rand(32, 8)
    >>> net = cat_net(ann, x, K=8).double()
    >>> torch.equal(net(x.double()), ttfs_simulate(net, x.double()))
    True
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..models.base import SpikingModel
from .core import _check_ann, _first_batch
from .fold import fold_batchnorm
from .registry import RECIPES

_LINEAR = (nn.Conv2d, nn.Linear)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def ttfs_code(a: torch.Tensor, K: int) -> torch.Tensor:
    """The spike bin ``k`` of each value ``a`` (in units of theta), -1 for no spike."""
    k = torch.round(-torch.log2(a.clamp(min=2.0 ** -(K - 1), max=1.0)))
    return torch.where(a < 2.0 ** -(K - 1), torch.full_like(k, -1.0), k)


def ttfs_value(k: torch.Tensor) -> torch.Tensor:
    """``2**-k`` where a spike is (``k >= 0``), else 0."""
    return torch.where(k >= 0, torch.exp2(-k.clamp_min(0)), torch.zeros_like(k))


class CATFn(torch.autograd.Function):
    r"""The unit code :math:`Q_K(\mathrm{clip}(\mathrm{relu}(x)/\theta, 0, 1))`, gradient :math:`1[0<x<\theta]/\theta`."""

    @staticmethod
    def forward(ctx, x, theta, K):
        ctx.save_for_backward(x)
        ctx.theta = theta
        return ttfs_value(ttfs_code((torch.relu(x) / theta).clamp(0.0, 1.0), K))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ((x > 0) & (x < ctx.theta)).to(g.dtype) / ctx.theta, None, None


class CATActivation(nn.Module):
    r""":math:`\theta\,Q_K(\mathrm{clip}(\mathrm{relu}(x)/\theta, 0, 1))` (module docstring); :meth:`code` gives the
    unit code (the value over theta), which :class:`CATNet` carries."""

    def __init__(self, theta: float, K: int):
        super().__init__()
        self.theta, self.K = float(theta), int(K)

    def code(self, x):
        return CATFn.apply(x, self.theta, self.K)

    def forward(self, x):
        return self.theta * self.code(x)

    def extra_repr(self) -> str:
        return f"theta={self.theta:.4g}, K={self.K}"


class CATNet(nn.Module):
    r"""The CAT-ANN: ``layers`` in order.  Conv/linear layers use 5-bit log weights :math:`s\,u` (:math:`u = \pm
    2^{-e}`); after an activation the layer computes :math:`(\theta s)\,W_u(\hat a) + b` on the unit codes
    :math:`\hat a = 2^{-k}` (a sum of powers of two, then one scale: the processor's shift-and-add), the first
    layer :math:`W(x) + b` on the analog input."""

    def __init__(self, layers, weight_bits: int = 5):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.weight_bits = weight_bits

    def unit_weight(self, m):
        """``(u, s)``: the log-quantised weight is ``s * u`` with ``u`` in {0, +-2**-e}."""
        from ..deploy.quant import QuantConfig, fake_quant, quant_params

        cfg = QuantConfig(bits=self.weight_bits, scheme="log2", per_channel=False)
        s = quant_params(m.weight, cfg)[0].detach()
        return fake_quant(m.weight, cfg) / s, s

    def linear(self, m, x, theta=None, bias=True):
        u, s = self.unit_weight(m)
        w = u if theta is not None else u * s
        y = F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups) if isinstance(m, nn.Conv2d) \
            else F.linear(x, w)
        if theta is not None:
            y = y * (theta * s)
        if bias and m.bias is not None:
            y = y + (m.bias.reshape(-1, 1, 1) if isinstance(m, nn.Conv2d) else m.bias)
        return y

    def forward(self, x):
        h, theta = x, None  # theta: h holds unit codes of a layer with that threshold; None: h is analog
        for m in self.layers:
            if isinstance(m, CATActivation):
                h, theta = m.code(h), m.theta
            elif isinstance(m, _LINEAR):
                h, theta = self.linear(m, h, theta), None
            else:
                h = m(h)
        if theta is not None:
            raise ValueError("cat_ttfs: the network ends with an activation; its last layer must be linear (logits)")
        return h


@torch.no_grad()
def ttfs_simulate(net: CATNet, x: torch.Tensor) -> torch.Tensor:
    """Logits of the TTFS SNN that ``net`` (a :class:`CATNet`) defines, simulated bin by bin (module docstring)."""
    analog, bins, theta = x, None, None  # bins: [K, B, ...] binary spikes of the current layer
    for m in net.layers:
        if isinstance(m, CATActivation):
            k = ttfs_code((torch.relu(analog) / m.theta).clamp(0.0, 1.0), m.K)
            bins = torch.stack([(k == j).to(analog.dtype) for j in range(m.K)])
            theta, analog = m.theta, None
        elif isinstance(m, _LINEAR):
            if bins is None:
                analog = net.linear(m, analog)
                continue
            u, s = net.unit_weight(m)
            v = None
            for j in range(bins.shape[0]):  # the spikes of bin j, each worth 2**-j (times theta), arrive together
                b = bins[j] * 2.0 ** -j
                part = F.conv2d(b, u, None, m.stride, m.padding, m.dilation, m.groups) \
                    if isinstance(m, nn.Conv2d) else F.linear(b, u)
                v = part if v is None else v + part
            v = v * (theta * s)
            if m.bias is not None:
                v = v + (m.bias.reshape(-1, 1, 1) if isinstance(m, nn.Conv2d) else m.bias)
            analog, bins = v, None
        elif isinstance(m, nn.MaxPool2d) and bins is not None:
            K = bins.shape[0]
            first = bins * torch.arange(K, 0, -1, dtype=bins.dtype).reshape(-1, *[1] * (bins.dim() - 1))
            pooled = F.max_pool2d(first.amax(0), m.kernel_size, m.stride, m.padding)  # K - earliest bin, 0: none
            bins = torch.stack([(pooled == K - j).to(bins.dtype) for j in range(K)])
        elif bins is not None:
            bins = torch.stack([m(b) for b in bins])
        else:
            analog = m(analog)
    if analog is None:
        raise ValueError("cat_ttfs: the network ends with an activation; its last layer must be linear (logits)")
    return analog


def _plain_layers(ann: nn.Module) -> list[nn.Module]:
    """The folded ANN's layers in order (a Sequential's, or a zoo mlp/convnet's leaves)."""
    from ..neurons.activations import ACTIVATIONS

    net = fold_batchnorm(ann)
    out, dims = [], None
    leaves = [m for m in net.modules() if not any(True for _ in m.children())]
    zoo = isinstance(ann, SpikingModel)
    for m in leaves:
        if isinstance(m, (nn.Identity, nn.Dropout, nn.Sequential, nn.ModuleList)):
            continue
        if zoo and isinstance(m, nn.Linear) and not any(isinstance(o, (nn.Linear, nn.Flatten)) for o in out):
            out.append(nn.Flatten())
        if isinstance(m, ACTIVATIONS):
            out.append(nn.ReLU())
        elif isinstance(m, _LINEAR + (nn.Flatten,)) or type(m) in _POOLS or isinstance(m, nn.MaxPool2d):
            out.append(nn.MaxPool2d(m.kernel_size, m.stride, m.padding) if isinstance(m, nn.MaxPool2d) else
                       copy.deepcopy(m))
        else:
            raise ValueError(f"cat_ttfs: layer {type(m).__name__} is not supported; allowed: Conv2d, Linear, "
                             "BatchNorm, ReLU, MaxPool2d, AvgPool2d, Flatten, Dropout in order")
    del dims
    return out


@torch.no_grad()
def cat_net(ann: nn.Module, calibration_data, K: int = 8, percentile: float = 99.9, weight_bits: int = 5) -> CATNet:
    """The CAT-ANN of ``ann``: BatchNorm folded, each ReLU a :class:`CATActivation` whose theta is the
    ``percentile`` of its (log-weight) ANN activations on ``calibration_data``."""
    _check_ann(ann)
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K: {K!r}; allowed: an integer >= 1 (time bins per layer)")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: {percentile!r}; allowed: a number in (0, 100]")
    x = calibration_data if torch.is_tensor(calibration_data) else _first_batch(calibration_data)
    if x is None or x.shape[0] == 0:
        raise ValueError("calibration_data: the calibration set is empty; cat_ttfs measures each theta on data")
    layers = _plain_layers(ann)
    net = CATNet(layers, weight_bits).eval()
    h = x
    for i, m in enumerate(layers):
        if isinstance(m, nn.ReLU):
            a = torch.relu(h).flatten()
            theta = float(torch.quantile(a[torch.randperm(a.numel())[:1_000_000]], percentile / 100.0))
            if theta <= 0:
                raise ValueError(f"ann: activation {i} is never positive on the calibration data")
            net.layers[i] = CATActivation(theta, K)
            h = net.layers[i](h)
        else:
            h = net.linear(m, h) if isinstance(m, _LINEAR) else m(h)  # calibration runs on real values
    return net


class TTFSNet(SpikingModel):
    """A TTFS SNN as a spikeforge model: ``forward`` simulates it (:func:`ttfs_simulate`) and returns the logits
    once, ``[1, B, num_classes]``; ``cat`` is the CAT-ANN it equals."""

    channels_last = False

    def __init__(self, cat: CATNet, num_classes: int, in_channels: int, static_ndim: int):
        super().__init__(num_classes, in_channels, 1, "direct", static_ndim)
        self.cat = cat

    def forward_seq(self, x_seq):
        return ttfs_simulate(self.cat, x_seq.mean(0)).unsqueeze(0)


@RECIPES.register("cat_ttfs", readout="once", smoke={"finetune_epochs": 0},
                  help="CAT activation + 5-bit log weights, simulated as a time-to-first-spike SNN (Lew et al. "
                       "2022; LOW-confidence card)")
def cat_ttfs(ann, calibration_data=None, *, K: int = 8, percentile: float = 99.9, weight_bits: int = 5,
             finetune_epochs: int = 0, lr: float = 1e-4, T=None, backend=None):
    """``finetune_epochs`` > 0 trains the CAT-ANN (straight-through) on labelled ``(x, y)`` calibration data before
    the SNN is built (conversion-aware training); ``T``/``backend`` are accepted and unused (K bins per layer)."""
    labelled = isinstance(calibration_data, (tuple, list)) and len(calibration_data) == 2
    x = calibration_data[0] if labelled else calibration_data
    net = cat_net(ann, x, K, percentile, weight_bits)
    if finetune_epochs:
        if not labelled:
            raise ValueError("calibration_data: finetune_epochs > 0 needs labelled data (x, y)")
        y = calibration_data[1]
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        net.train()
        for _ in range(finetune_epochs):
            for i in range(0, x.shape[0], 64):
                loss = F.cross_entropy(net(x[i:i + 64]), y[i:i + 64])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
    with torch.no_grad():
        k = int(net(x[:1]).shape[-1])
    return TTFSNet(net, k, int(x.shape[1]) if x.dim() > 2 else 1, x.dim()).eval()


__all__ = ["cat_ttfs", "cat_net", "ttfs_simulate", "ttfs_code", "ttfs_value", "CATActivation", "CATNet", "TTFSNet"]
