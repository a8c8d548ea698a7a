r"""``snn2ann``: a soft-reset IF SNN trained through a weight-sharing ANN branch with spike mapping units (SNN2ANN).

Tang, Lai, Xie, Yang, Zheng, "SNN2ANN: A Fast and Memory-Efficient Training Framework for Spiking Neural
Networks", arXiv 2206.09449 (2022); card ``snn2ann-weight-sharing.md`` (LOW confidence: no official code; what
is reconstructed here is listed in ``docs/methods/snn2ann.md``).

Per batch: the SNN runs its ``T`` steps without autograd and each IF site :math:`l` records its firing rate
:math:`r_l = \frac1T\sum_t s_l[t]`; the ANN branch (the model with a spike mapping unit at every IF site, the
same weights) runs once, at ``T = 1``, with autograd; its output takes the SNN's value (straight-through).
With STSU, every layer that holds weights also receives, as its input value, the time-average of what it
received in the SNN pass (so pooling of spikes is the SNN's, not a pooling of rates):

.. math::
    z_l = f_l(a_{l-1};\,W_l), \qquad
    a_l = \begin{cases} r_l & \text{STSU (measured SNN rate)}\\
                        \mathrm{clip}(\lfloor T z_l/\vartheta_l\rfloor/T,\,0,\,1) & \text{ReSU} \end{cases},
    \qquad \frac{\partial a_l}{\partial z_l} = \tfrac{1}{\vartheta_l}\mathbb 1[0<z_l<\vartheta_l]

and the loss sees the SNN's per-step outputs ``[T, B, K]``.  No graph is kept through time, so training memory
does not grow with ``T``.  With STSU every ANN-branch activation *is* the SNN's rate, so the branch's logits equal
the SNN's time-averaged logits.

ATA (adaptive threshold adjustment): after each step, layer :math:`l`'s threshold moves towards the
``ata_percentile``-th percentile :math:`q_l` of the positive mean drives the SNN received,
:math:`\vartheta_l \leftarrow \vartheta_l (q_l/\vartheta_l)^{\eta}` (:math:`\eta` = ``ata_momentum``, one step
clamped to [1/2, 2]).  Since an IF neuron with zero initial potential is positively homogeneous, this is applied
as the equivalent rescaling of the affine layer that feeds the site (BatchNorm's gamma and beta, or the
convolution's/linear layer's weight and bias, divided by the factor), so the thresholds stay the model's and the
checkpoint loads into the registered model unchanged.

Example:
    >>> import torch
    >>> from spikeforge.methods import create_method
    >>> from spikeforge.models import create_model
    >>> snn = create_model("convnet", neuron="if", neuron_kwargs={"v_reset": None}, T=4, input_size=16,
    ...                    channels=(4, 8)).double()
    >>> net = create_method("snn2ann").prepare(snn)
    >>> y_snn, y_ann, rates = net.branches(torch.rand(2, 1, 16, 16, dtype=torch.float64))
    >>> bool(torch.allclose(y_ann[0], y_snn.mean(0), atol=1e-12))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers.spike_mapping import ReSU, STSU, straight_through
from ..layers import TimeFold, repeats_one_step
from ..neurons import IF
from ..neurons.base import BaseNeuron
from ._twin import BATCHNORMS, TwinNet, neuron_sites, unwrap
from .base import Method, StepContext, StepResult
from .registry import METHODS

UNITS = ("stsu", "resu")
#: leaves that may sit between the affine layer ATA rescales and the neuron (positively homogeneous)
_HOMOGENEOUS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity,
                nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.ReLU)


@dataclass(frozen=True)
class SNN2ANNConfig:
    """``unit``: spike mapping unit (``stsu`` measured SNN rate, ``resu`` quantised clipped ReLU); ``ata``:
    adaptive threshold adjustment on/off; ``ata_percentile`` (0, 100]: the drive percentile a threshold tracks;
    ``ata_momentum`` (0, 1]: the fraction of the (log) distance moved per step."""

    unit: str = "stsu"
    ata: bool = True
    ata_percentile: float = 99.9
    ata_momentum: float = 0.01

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"method.kwargs.unit: got {self.unit!r}; allowed: {', '.join(UNITS)}")
        if not isinstance(self.ata, bool):
            raise ValueError(f"method.kwargs.ata: got {self.ata!r}; allowed: true or false")
        p = self.ata_percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 100:
            raise ValueError(f"method.kwargs.ata_percentile: got {p!r}; allowed: a number in (0, 100]")
        m = self.ata_momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m <= 1:
            raise ValueError(f"method.kwargs.ata_momentum: got {m!r}; allowed: a number in (0, 1]")


class SNN2ANNNet(TwinNet):
    """A soft-reset IF SNN and its ANN branch (a spike mapping unit at every IF site) on the same weights."""

    def __init__(self, snn, unit: str = "stsu"):
        if unit not in UNITS:
            raise ValueError(f"unit: got {unit!r}; allowed: {', '.join(UNITS)}")
        T = snn.T

        def site(path, neuron):
            return STSU(neuron.v_threshold) if unit == "stsu" else ReSU(T, neuron.v_threshold)

        super().__init__(snn, site)
        self.__dict__["unit"] = unit
        self.__dict__["feeds"] = _feed_points(snn)

    def branches(self, x: torch.Tensor):
        """``(y_snn [T, B, K], y_ann [1, B, K], rates {site: [B, ...]})``; the SNN pass runs without autograd.

        With STSU, every unit's value is its site's rate and every feed point of the ANN branch (each
        ``TimeFold`` and each bare convolution/linear layer, the layers that hold the weights) receives, as its
        input value, the time-average of what the same layer received in the SNN pass; gradients flow through
        the ANN branch.  With ReSU the ANN branch runs on its own values."""
        stsu = self.unit == "stsu"
        snn_mods, ann_mods = dict(self.snn.named_modules()), dict(self.ann.named_modules())
        rates, means, handles = {}, {}, []

        def record_rate(path):
            def hook(m, inp, out):
                rates[path] = _time_mean(out[0] if isinstance(out, tuple) else out)
            return hook

        def record_mean(path):
            def hook(m, args):
                means[path] = _time_mean(args[0])
            return hook

        try:
            for path in self.units:
                handles.append(snn_mods[path].register_forward_hook(record_rate(path)))
            for path in self.feeds if stsu else ():
                handles.append(snn_mods[path].register_forward_pre_hook(record_mean(path)))
            with torch.no_grad():
                y_snn = self.snn(x)
        finally:
            for h in handles:
                h.remove()
        handles = []
        try:
            if stsu:
                for path, unit in self.units.items():
                    r = rates[path].unsqueeze(0)
                    handles.append(unit.register_forward_pre_hook(lambda m, args, r=r: (args[0], r)))
                for path in self.feeds:
                    v = means[path].unsqueeze(0)
                    handles.append(ann_mods[path].register_forward_pre_hook(
                        lambda m, args, v=v: (straight_through(args[0], v), *args[1:])))
            y_ann = self.ann_forward(x)
        finally:
            for h in handles:
                h.remove()
        return y_snn, y_ann, rates

    def forward(self, x: torch.Tensor, ann_branch: bool = False) -> torch.Tensor:
        """The SNN's output ``[T, B, K]``; with ``ann_branch=True`` its value with the ANN branch's gradient."""
        if not ann_branch:
            return self.snn(x)
        y_snn, y_ann, _ = self.branches(x)
        return straight_through(y_ann.expand_as(y_snn), y_snn)


def _time_mean(x: torch.Tensor) -> torch.Tensor:
    """``x [T, B, ...]`` averaged over T: a repeated step is returned as is, and a channels-last sequence is
    reduced in its memory order (``mean(0)`` on it is ~3x slower on CPU)."""
    if repeats_one_step(x):
        return x[0]
    if x.dim() == 5 and not x.is_contiguous():
        nhwc = x.permute(0, 1, 3, 4, 2)
        if nhwc.is_contiguous():
            return nhwc.mean(0).permute(0, 3, 1, 2)
    return x.mean(0)


_ATA_SAMPLES = 1 << 18  # drive values per site that ATA takes its percentile from


def _flat(z: torch.Tensor) -> torch.Tensor:
    """``z`` as 1-D without a copy when it is contiguous in C or channels-last order (the order is irrelevant to
    a percentile)."""
    if not z.is_contiguous() and z.dim() >= 3:
        nhwc = z.permute(0, *range(2, z.dim()), 1)
        if nhwc.is_contiguous():
            return nhwc.reshape(-1)
    return z.reshape(-1)


def _feed_points(snn: nn.Module) -> list[str]:
    """Paths of the layers whose input is a time-major sequence and that hold the weights: every ``TimeFold``
    and every convolution/linear layer outside one (neurons excluded)."""
    points, skip = [], ()
    for path, m in snn.named_modules():
        if not path or (skip and path.startswith(skip)):
            continue
        if isinstance(m, (TimeFold, BaseNeuron)):
            skip = path + "."
            if isinstance(m, TimeFold):
                points.append(path)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            points.append(path)
    return points


def _check_neuron(path: str, neuron) -> None:
    if type(neuron) is not IF:
        raise ValueError(f"snn2ann: {type(neuron).__name__} at {path} is not an IF neuron; the spike mapping units "
                         "model the soft-reset IF rate (set model.neuron=if, model.neuron_kwargs.v_reset=null)")
    if neuron.v_reset is not None:
        raise ValueError(f"snn2ann: IF at {path} has a hard reset (v_reset={neuron.v_reset}); the spike mapping "
                         "units model the soft-reset IF (set model.neuron_kwargs.v_reset=null)")


def ata_feeder(model: nn.Module, path: str) -> nn.Module:
    """The affine layer (BatchNorm, convolution or linear) whose output feeds the neuron at ``path`` through
    positively homogeneous layers only; ATA rescales it.  One ``ValueError`` when there is none."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    why = "it is not preceded, in the same Sequential, by a block ending in BatchNorm, convolution or linear"
    if isinstance(parent, nn.Sequential):
        names = list(parent._modules)
        i = names.index(name)
        if i > 0:
            leaves = [m for m in parent._modules[names[i - 1]].modules() if not any(True for _ in m.children())]
            for m in reversed(leaves):
                if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) or \
                        (isinstance(m, BATCHNORMS) and m.affine):
                    return m
                if not isinstance(m, _HOMOGENEOUS):
                    why = f"a {type(m).__name__} sits between it and the layer feeding it"
                    break
    raise ValueError(f"snn2ann: ATA cannot adjust the threshold of the IF at {path}: {why} (set "
                     "method.kwargs.ata=false)")


@METHODS.register("snn2ann", help="IF SNN trained through a weight-sharing ANN branch: STSU/ReSU, ATA "
                             "(Tang et al. 2022)")
class SNN2ANN(Method):
    name = "snn2ann"
    card = "snn2ann-weight-sharing.md"
    Config = SNN2ANNConfig
    smoke_overrides = ("model.neuron=if", "model.neuron_kwargs.v_reset=null")

    def _check_model(self, model):
        sites = neuron_sites(model, "snn2ann", _check_neuron)
        if self.config.ata:
            for path, _ in sites:
                ata_feeder(model, path)
        return sites

    def check(self, model, cfg) -> None:
        self._check_model(model)

    def prepare(self, model):
        self._check_model(model)
        return SNN2ANNNet(model, self.config.unit)

    def train_step(self, model, x, y, ctx: StepContext) -> StepResult:
        net = unwrap(model)
        drives, handles = {}, []
        if self.config.ata:  # record each site's mean drive over T during the SNN pass
            neurons = dict(net.snn.named_modules())
            handles = [neurons[p].register_forward_hook(
                lambda m, inp, out, p=p: drives.__setitem__(p, _time_mean(inp[0].detach()))) for p in net.units]
        try:
            with ctx.autocast():
                out = model(x, ann_branch=True)
        finally:
            for h in handles:
                h.remove()
        loss = ctx.loss_fn(out, y)
        (loss * ctx.loss_scale).backward()
        aux = {}
        if self.config.ata:
            aux["ata_factor_mean"] = float(self.adjust_thresholds_(net, drives).mean())
        return StepResult(loss.detach(), out.detach(), aux)

    @torch.no_grad()
    def adjust_thresholds_(self, net: SNN2ANNNet, drives: dict) -> torch.Tensor:
        """ATA: one step of every site's threshold towards the drive percentile, applied as the rescaling of the
        layer that feeds it; returns the factors (averaged over processes under DDP)."""
        cfg = self.config
        neurons = dict(net.snn.named_modules())
        paths = list(net.units)
        factors = []
        for path in paths:
            z = _flat(drives[path].detach())
            z = z[:: max(1, z.numel() // _ATA_SAMPLES)]  # a strided subsample: the percentile, not every value
            pos = z[z > 0].float()
            if pos.numel() == 0:
                factors.append(1.0)
                continue
            q = float(torch.quantile(pos, cfg.ata_percentile / 100.0))
            theta = float(neurons[path].v_threshold)
            factors.append(min(2.0, max(0.5, (q / theta) ** cfg.ata_momentum)))
        f = torch.tensor(factors, dtype=torch.float64, device=next(net.parameters()).device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(f)
            f /= torch.distributed.get_world_size()
        for path, k in zip(paths, f.tolist()):
            layer = ata_feeder(net.snn, path)
            for p in (layer.weight, getattr(layer, "bias", None)):
                if p is not None:
                    p.div_(k)
        return f
