r"""Weight quantisation: ``quantize_(model, QuantConfig)`` in place, torchao-style, plus the quantisers themselves.

Schemes (per output channel — dim 0 of the weight — or per tensor), with :math:`b` = ``bits``:

* ``uniform``, symmetric: :math:`s = \max|w| / q_{max}`, :math:`q_{max} = 2^{b-1}-1`,
  :math:`\hat w = s\,\mathrm{clamp}(\mathrm{round}(w/s), -q_{max}, q_{max})` (2 bits: levels -1, 0, 1).
  Asymmetric: :math:`s = (\max w - \min w)/(2^b-1)`, zero point :math:`z = \mathrm{round}(-\min w / s)`,
  :math:`\hat w = s\,(\mathrm{clamp}(\mathrm{round}(w/s) + z, 0, 2^b-1) - z)`.
  ``bits=1`` with ``uniform`` is ``binary``.
* ``binary`` (1 bit; BinaryConnect / XNOR-Net, ALBSNN's binariser): :math:`\hat w = \alpha\,\mathrm{sign}(w)`,
  :math:`\alpha = \mathrm{mean}|w|`.
* ``ternary`` (2 bits; TWN): :math:`\Delta = 0.7\,\mathrm{mean}|w|`, :math:`\hat w = \alpha\,\mathrm{sign}(w)
  [|w| > \Delta]`, :math:`\alpha = \mathrm{mean}(|w| : |w| > \Delta)`.
* ``log2`` (CAT's log weights: 1 sign bit + a :math:`(b-1)`-bit exponent code, one code kept for zero):
  :math:`\hat w = \mathrm{sign}(w)\,s\,2^{-e}`, :math:`e = \mathrm{round}(-\log_2(|w|/s))`, :math:`s = \max|w|`,
  :math:`e \in \{0, \dots, E\}`, :math:`E = 2^{b-1}-2`; weights with :math:`e > E` become 0.  5 bits: 15
  power-of-two magnitudes and zero.

Every quantiser has a straight-through gradient: :func:`fake_quant` returns :math:`w + (\hat w - w)` with the
difference detached, so :math:`\partial\hat w/\partial w = 1` (scales carry no gradient).

``mode="qat"`` recomputes the scales from the current weights at every forward (train through it);
``mode="ptq"`` calibrates them once, when :func:`quantize_` runs, and keeps them fixed (buffers).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.deploy import QuantConfig, quantize_, export_int, dequantize_
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> quantize_(net, QuantConfig(bits=4))
    >>> q, scale, zp = export_int(net)["0"]
    >>> q.dtype, int(q.abs().max()) <= 7, tuple(scale.shape)
    (torch.int8, True, (3,))
    >>> torch.equal(net[0].weight, q.float() * scale[:, None])
    True
    >>> dequantize_(net)          # plain float weights again, holding the quantised values
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

SCHEMES = ("uniform", "log2", "ternary", "binary")
MODES = ("qat", "ptq")
HANDLED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Exact module types whose forward uses ``self.weight`` as is (subclasses may transform it: they raise)."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class QuantConfig:
    """Weight quantisation settings (see the module docstring for each scheme's formula).

    ``bits``: 1..8 (``binary`` needs 1, ``ternary`` 2, ``log2`` 2..8); ``per_channel``: one scale per output
    channel (dim 0) instead of one per tensor; ``symmetric``: zero point 0 (``uniform`` only may be asymmetric);
    ``mode``: ``"qat"`` (scales follow the weights) or ``"ptq"`` (scales calibrated once).
    """

    bits: int = 8
    scheme: str = "uniform"
    per_channel: bool = True
    symmetric: bool = True
    mode: str = "qat"

    def __post_init__(self):
        if not _is_int(self.bits) or not 1 <= self.bits <= 8:
            raise ValueError(f"quant.bits: expected an integer in 1..8, got {self.bits!r}")
        if self.scheme not in SCHEMES:
            raise ValueError(f"quant.scheme: unknown value {self.scheme!r}; allowed: {', '.join(SCHEMES)}")
        if self.mode not in MODES:
            raise ValueError(f"quant.mode: unknown value {self.mode!r}; allowed: qat (quantisation-aware "
                             f"training, scales follow the weights), ptq (scales calibrated once)")
        for key in ("per_channel", "symmetric"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"quant.{key}: expected True or False, got {getattr(self, key)!r}")
        need = {"binary": (1, 1), "ternary": (2, 2), "log2": (2, 8)}.get(self.scheme)
        if need and not need[0] <= self.bits <= need[1]:
            allowed = str(need[0]) if need[0] == need[1] else f"{need[0]}..{need[1]}"
            raise ValueError(f"quant.bits: {self.bits} with scheme {self.scheme!r}; allowed: {allowed}")
        if not self.symmetric and self.kind != "uniform":
            raise ValueError(f"quant.symmetric: False needs scheme 'uniform' with bits >= 2, got scheme "
                             f"{self.scheme!r} with bits {self.bits}; allowed: True")

    @property
    def kind(self) -> str:
        """The quantiser actually used: ``uniform`` at 1 bit is ``binary``."""
        return "binary" if self.scheme == "uniform" and self.bits == 1 else self.scheme

    @property
    def levels(self) -> int:
        """Number of distinct weight values per scale."""
        k = self.kind
        if k == "binary":
            return 2
        if k == "ternary":
            return 3
        if k == "log2":
            return 2 * (2 ** (self.bits - 1) - 1) + 1
        return 2 ** self.bits - (1 if self.symmetric else 0)


def _reduce(w: torch.Tensor, per_channel: bool, fn) -> torch.Tensor:
    """``fn`` over all but dim 0 (kept as ``[C, 1, ...]``) per channel, else over everything (a 0-d tensor)."""
    if per_channel and w.dim() >= 2:
        return fn(w.reshape(w.shape[0], -1), 1).reshape(w.shape[0], *([1] * (w.dim() - 1)))
    return fn(w.reshape(1, -1), 1).reshape(())


def quant_params(w: torch.Tensor, cfg: QuantConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` for ``w`` under ``cfg`` (shapes ``[C, 1, ...]`` per channel, else 0-d)."""
    w = w.detach()
    k = cfg.kind
    amax = _reduce(w.abs(), cfg.per_channel, lambda t, d: t.amax(d))
    if k == "binary":
        scale = _reduce(w.abs(), cfg.per_channel, lambda t, d: t.mean(d))
    elif k == "ternary":
        a = w.abs()
        delta = 0.7 * _reduce(a, cfg.per_channel, lambda t, d: t.mean(d))
        big = (a > delta).to(w.dtype)
        num = _reduce(a * big, cfg.per_channel, lambda t, d: t.sum(d))
        den = _reduce(big, cfg.per_channel, lambda t, d: t.sum(d))
        scale = num / den.clamp_min(1.0)
    elif k == "log2":
        scale = amax
    elif cfg.symmetric:
        scale = amax / (2 ** (cfg.bits - 1) - 1)
    else:
        lo = _reduce(w, cfg.per_channel, lambda t, d: t.amin(d)).clamp_max(0.0)
        hi = _reduce(w, cfg.per_channel, lambda t, d: t.amax(d)).clamp_min(0.0)
        scale = (hi - lo) / (2 ** cfg.bits - 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.round(-lo / scale)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, torch.zeros_like(scale)


def quantize_int(w: torch.Tensor, cfg: QuantConfig, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """Integer codes of ``w`` (float tensor of whole numbers).  ``log2``: signed exponent codes ``c``, with
    ``|c| = e + 1`` and 0 for a zero weight (decode with :func:`dequantize_int`)."""
    w = w.detach()
    k = cfg.kind
    if k == "binary":
        return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
    if k == "ternary":
        delta = 0.7 * _reduce(w.abs(), cfg.per_channel, lambda t, d: t.mean(d))
        return torch.sign(w) * (w.abs() > delta).to(w.dtype)
    if k == "log2":
        E = 2 ** (cfg.bits - 1) - 2
        r = w.abs() / scale
        e = torch.round(-torch.log2(r.clamp_min(torch.finfo(w.dtype).tiny))).clamp_min(0.0)
        return torch.where(e > E, torch.zeros_like(e), torch.sign(w) * (e + 1))
    if cfg.symmetric:
        qmax = 2 ** (cfg.bits - 1) - 1
        return torch.clamp(torch.round(w / scale), -qmax, qmax)
    return torch.clamp(torch.round(w / scale) + zero_point, 0, 2 ** cfg.bits - 1)


def dequantize_int(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, scheme: str = "uniform") -> torch.Tensor:
    """Float weights from integer codes: ``(q - zero_point) * scale``; for ``scheme="log2"``
    ``sign(q) * scale * 2**-(|q| - 1)`` (0 where ``q == 0``).  ``scale``/``zero_point`` broadcast over dim 0."""
    q = q.to(scale.dtype)
    if scale.dim() == 1:
        scale = scale.reshape(-1, *([1] * (q.dim() - 1)))
        zero_point = zero_point.reshape(-1, *([1] * (q.dim() - 1)))
    if scheme == "log2":
        mag = torch.where(q == 0, torch.zeros_like(q), torch.exp2(1.0 - q.abs()))
        return torch.sign(q) * mag * scale
    return (q - zero_point) * scale


def _dequant(q, scale, zero_point, cfg):
    return dequantize_int(q, scale, zero_point, "log2" if cfg.kind == "log2" else "uniform")


def fake_quant(w: torch.Tensor, cfg: QuantConfig, scale: torch.Tensor | None = None,
               zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """``w`` quantised and dequantised under ``cfg``, with a straight-through gradient (identity).

    ``scale``/``zero_point``: fixed ones (PTQ); by default computed from ``w`` (:func:`quant_params`).

    Example:
        >>> import torch
        >>> from spikeforge.deploy import QuantConfig, fake_quant
        >>> w = torch.tensor([[0.5, -0.25, 0.125, 1.0]], requires_grad=True)
        >>> fake_quant(torch.tensor([0.3, -0.1, 1.0]), QuantConfig(bits=5, scheme="log2")).tolist()
        [0.25, -0.125, 1.0]
        >>> fake_quant(w, QuantConfig(bits=1)).tolist()            # binary, alpha = mean|w|
        [[0.46875, -0.46875, 0.46875, 0.46875]]
        >>> fake_quant(w, QuantConfig(bits=2)).sum().backward(); w.grad.tolist()   # straight through
        [[1.0, 1.0, 1.0, 1.0]]
    """
    if not isinstance(cfg, QuantConfig):
        raise ValueError(f"cfg: expected a QuantConfig, got {type(cfg).__name__}")
    if not torch.is_tensor(w) or not w.is_floating_point():
        raise ValueError(f"w: expected a floating-point tensor, got {getattr(w, 'dtype', type(w).__name__)}")
    if scale is None:
        scale, zero_point = quant_params(w, cfg)
    w_hat = _dequant(quantize_int(w, cfg, scale, zero_point), scale, zero_point, cfg)
    return w + (w_hat - w).detach()


class DeployWeight(nn.Module):
    """The weight parametrisation that ``quantize_`` and ``weight_noise_`` install: the stored weight, fake-
    quantised (when ``quant`` is set), plus device noise (when a noise spec is set; :mod:`.noise`)."""

    def __init__(self):
        super().__init__()
        self.quant: QuantConfig | None = None
        self.noise = None            # a noise.NoiseSpec or None
        self.register_buffer("scale", None)
        self.register_buffer("zero_point", None)
        self.register_buffer("noise_eps", None)

    def set_quant(self, cfg: QuantConfig | None, w: torch.Tensor | None = None) -> None:
        self.quant = cfg
        if cfg is not None and cfg.mode == "ptq":
            self.scale, self.zero_point = quant_params(w, cfg)
        else:
            self.scale = self.zero_point = None

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        if self.quant is None:
            return w
        return fake_quant(w, self.quant, self.scale, self.zero_point)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w = self.quantized(w)
        if self.noise is not None:
            w = self.noise.apply(self, w)
        return w

    def extra_repr(self) -> str:
        return f"quant={self.quant}, noise={self.noise}"


def deploy_weight(module: nn.Module, create: bool = False) -> DeployWeight | None:
    """The :class:`DeployWeight` on ``module.weight`` (installed when ``create``), or None."""
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, DeployWeight):
                return p
    if not create:
        return None
    p = DeployWeight().to(module.weight.device)
    parametrize.register_parametrization(module, "weight", p, unsafe=True)
    return p


def raw_weight(module: nn.Module) -> torch.Tensor:
    """The stored (float, unquantised, noise-free) weight of a possibly parametrised module."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def base_type(module: nn.Module) -> type:
    """The module's class, seen through torch's parametrisation subclass (``ParametrizedLinear`` -> Linear)."""
    return type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)


def _default_filter(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))


def select_layers(model: nn.Module, filter_fn=None, verb: str = "quantize_") -> dict[str, nn.Module]:
    """The modules ``filter_fn(module, name)`` (default: every Linear/Conv) selects; a selected module of a type
    whose forward does not use ``weight`` as is raises naming it; selecting nothing raises."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    fn = filter_fn or _default_filter
    chosen = {}
    for name, m in model.named_modules():
        if isinstance(m, DeployWeight) or ".parametrizations." in f".{name}.":
            continue
        if not fn(m, name):
            continue
        if base_type(m) not in HANDLED:
            raise ValueError(f"{verb}: layer {name or '<root>'!r} ({base_type(m).__name__}) matches the filter but "
                             f"cannot be handled; allowed types: {', '.join(t.__name__ for t in HANDLED)} (its "
                             f"forward must use .weight as is); exclude it with filter_fn")
        chosen[name] = m
    if not chosen:
        raise ValueError(f"{verb}: model {type(model).__name__} has no layer to act on (filter_fn matched "
                         f"nothing); allowed: a model with {', '.join(t.__name__ for t in HANDLED)} layers")
    return chosen


def quantize_(model: nn.Module, cfg: QuantConfig, filter_fn=None) -> None:
    """Fake-quantise the weights of every Linear/Conv of ``model`` (or those ``filter_fn(module, name)``
    selects) in place, through a weight parametrisation; the stored float weights stay trainable (QAT)."""
    if not isinstance(cfg, QuantConfig):
        raise ValueError(f"cfg: expected a QuantConfig, got {type(cfg).__name__}")
    for name, m in select_layers(model, filter_fn, "quantize_").items():
        p = deploy_weight(m, create=True)
        if p.quant is not None:
            raise ValueError(f"quantize_: layer {name!r} is already quantised ({p.quant}); call dequantize_ first")
        p.set_quant(cfg, raw_weight(m))


def dequantize_(model: nn.Module, keep_quantized: bool = True) -> None:
    """Remove the fake-quantisation: with ``keep_quantized`` the weights become the quantised values (plain
    float tensors, the same function as before), otherwise the stored float weights come back.  Weight noise
    installed by :func:`~spikeforge.deploy.noise.weight_noise_` stays."""
    for m in list(model.modules()):
        p = deploy_weight(m)
        if p is None or p.quant is None:
            continue
        with torch.no_grad():
            w = raw_weight(m)
            if keep_quantized:
                w.copy_(p.quantized(w))
        p.set_quant(None)
        _drop_if_idle(m, p)


def _drop_if_idle(m: nn.Module, p: DeployWeight) -> None:
    if p.quant is None and p.noise is None and len(m.parametrizations.weight) == 1:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)


def export_int(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``{name: (int_weights, scale, zero_point)}`` for every quantised layer; ``scale``/``zero_point`` are
    ``[C_out]`` per channel or 0-d, and ``dequantize_int(q, scale, zero_point, scheme)`` gives back exactly the
    weights the model uses (noise aside).  Codes are int8 when they fit, else int16."""
    out = {}
    for name, m in model.named_modules():
        p = deploy_weight(m)
        if p is None or p.quant is None:
            continue
        w = raw_weight(m).detach()
        cfg = p.quant
        scale, zp = (p.scale, p.zero_point) if p.scale is not None else quant_params(w, cfg)
        q = quantize_int(w, cfg, scale, zp)
        dtype = torch.int8 if q.min() >= -128 and q.max() <= 127 else torch.int16
        out[name] = (q.to(dtype), scale.reshape(-1) if scale.dim() else scale,
                     (zp.reshape(-1) if zp.dim() else zp).to(dtype))
    if not out:
        raise ValueError("export_int: model has no quantised layer; allowed: a model after quantize_")
    return out


def storage_bits(model: nn.Module, float_bits: int = 32) -> dict[str, int]:
    """Weight storage per layer in bits: quantised layers ``bits x weights + float_bits x scales``, others
    ``float_bits x weights`` (ALBSNN's accounting)."""
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, HANDLED):
            continue
        n = raw_weight(m).numel()
        p = deploy_weight(m)
        if p is None or p.quant is None:
            out[name] = float_bits * n
        else:
            scales = m.weight.shape[0] if p.quant.per_channel else 1
            out[name] = p.quant.bits * n + float_bits * scales * (1 if p.quant.symmetric else 2)
    return out


__all__ = ["QuantConfig", "SCHEMES", "MODES", "fake_quant", "quant_params", "quantize_int", "dequantize_int",
           "quantize_", "dequantize_", "export_int", "storage_bits", "DeployWeight", "deploy_weight",
           "raw_weight", "select_layers"]

