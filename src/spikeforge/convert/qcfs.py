r"""``qcfs`` and ``offset``: the anchors to beat at low T.

- ``qcfs`` (Bu et al., ICLR 2022; SpikingJelly 2.0 ships the activation): train the ANN with the
  quantisation-clip-floor-shift activation (``model.neuron=qcfs``, :class:`spikeforge.neurons.QCFS`),
  :math:`\tfrac{\lambda}{L}\lfloor\mathrm{clamp}(x/\lambda,0,1)L + \tfrac12\rfloor`; convert with
  :math:`\theta_l = \lambda_l` and the initial membrane :math:`\theta/2` (the shift), so that at :math:`T = L` the
  expected conversion error is zero.
- ``offset`` (offset-spike calibration, Hao et al., AAAI 2023): convert (``qcfs`` for a QCFS ANN, else
  ``channelwise`` percentile with :math:`\theta/2`), then layer by layer measure on the calibration data the mean
  *offset spike* :math:`\delta_l = \overline{n^{SNN}_l - T\,\mathrm{clip}(a_l,0,\theta_l)/\theta_l}` (spikes fired
  minus spikes the ANN value asks for, over ``T`` steps) and shift the layer's initial membrane by
  :math:`-\delta_l\theta_l` (clamped to [-1, 1] thresholds).  [inferred: the paper's per-layer shift of one
  threshold where the offset is ±1, generalised to the measured mean.]

Example:
    >>> from spikeforge.convert.registry import convert_with
    >>> from spikeforge.models import create_model
    >>> ann = create_model("mlp", neuron="qcfs", neuron_kwargs={"lam": 2.0, "L": 4}, T=1, input_size=4,
    ...                    hidden=(8,))
    >>> snn = convert_with("qcfs", ann, T=4)
    >>> snn.features[1].v_init, float(snn.features[1].theta)
    (0.5, 2.0)
"""

from __future__ import annotations

import torch

from ..neurons.activations import QCFS
from .core import ThresholdIF, convert, prepare_ann
from .registry import RECIPES, make_config
from .simulate import run_sequence
from .tcl import _check_clip


@RECIPES.register("qcfs", neuron="qcfs",
                  help="QCFS activation bounds as thresholds, theta/2 start (Bu et al. 2022); ANN with neuron=qcfs")
def qcfs(ann, calibration_data=None, **options):
    _check_clip(ann, "qcfs", QCFS, "model.neuron=qcfs")
    cfg, _ = make_config("qcfs", {"norm": "bound", "v_init": 0.5}, options)
    return convert(ann, cfg, calibration_data)


@torch.no_grad()
def offset_calibrate_(snn, ann, x: torch.Tensor, T: int) -> dict[str, float]:
    """Shift each site's initial membrane by minus its mean offset spike, layer by layer (module docstring);
    returns ``{site: offset}`` measured before each shift."""
    net, zoo = prepare_ann(ann)
    ann_mods = dict(net.named_modules())
    prefix = "" if zoo else "net."
    sites = [(n, m) for n, m in snn.named_modules() if isinstance(m, ThresholdIF)]
    acts = {}
    hooks = [ann_mods[n[len(prefix):]].register_forward_hook(
        lambda mod, i, o, n=n: acts.__setitem__(n, o.detach().float())) for n, _ in sites]
    try:
        net(x)
    finally:
        for h in hooks:
            h.remove()
    offsets = {}
    for name, site in sites:
        got = {}
        h = site.neuron.register_forward_hook(lambda mod, i, o: got.__setitem__("s", o.detach().float()))
        try:
            run_sequence(snn, x, T, max_fold=T * x.shape[0])  # one chunk: the hook sees every sample
        finally:
            h.remove()
        s = got["s"]
        if s.shape[1] != x.shape[0]:
            s = s.reshape(T, x.shape[0], *s.shape[1:])
        a = acts[name].mean(0) if zoo else acts[name]
        th = site.theta.float()
        thv = th.reshape(-1, *([1] * (a.dim() - 2))) if th.dim() else th
        want = torch.minimum(a.clamp_min(0), thv.expand_as(a)) / thv * T
        delta = float((s.sum(0) - want).mean())
        offsets[name] = delta
        site.set_v_init(max(-1.0, min(1.0, site.v_init - delta)))
    return offsets


@RECIPES.register("offset", help="offset-spike calibration of the initial membrane (Hao et al. 2023) on top of qcfs "
                                 "(QCFS ANN) or channel-wise percentile")
def offset(ann, calibration_data=None, *, calib_samples: int = 256, **options):
    if calibration_data is None:
        raise ValueError("calibration_data: None, but offset calibration measures spike offsets on data")
    is_qcfs = any(isinstance(m, QCFS) for m in ann.modules())
    defaults = {"norm": "bound", "v_init": 0.5} if is_qcfs else \
        {"norm": "percentile", "percentile": 99.99, "per_channel": True, "v_init": 0.5}
    cfg, _ = make_config("offset", defaults, options)
    snn = convert(ann, cfg, calibration_data)
    x = _calib_tensor(calibration_data, calib_samples)
    offset_calibrate_(snn, ann, x, cfg.T)
    return snn


def _calib_tensor(data, n: int) -> torch.Tensor:
    if torch.is_tensor(data):
        return data[:n]
    xs, k = [], 0
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        xs.append(x)
        k += x.shape[0]
        if k >= n:
            break
    if not xs:
        raise ValueError("calibration_data: the calibration set is empty")
    return torch.cat(xs)[:n]


__all__ = ["qcfs", "offset", "offset_calibrate_"]
