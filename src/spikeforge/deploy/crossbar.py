r"""Memristive crossbars: every Linear / Conv (im2col) layer computed on tiles of non-ideal analog crossbars.

Methodology of Bhattacharjee et al., "Examining the Robustness of Spiking Neural Networks on Non-ideal
Memristive Crossbars", ISLPED 2022 (arXiv 2206.09599), with the analytical
resistive-network model of the same lab's pipeline (GENIEx, Chakraborty et al., DAC 2020, arXiv 2003.06902).

Mapping.  A layer's weights ``W [out, fan_in]`` (a convolution unrolled by im2col) go onto differential pairs
of conductances in :math:`[G_{off}, G_{on}]`, :math:`G_{on} = 1/R_{on}`, :math:`G_{off} = G_{on}/r`:

.. math::
    G^{\pm}_{ij} = G_{off} + (G_{on} - G_{off})\,\frac{\max(\pm W_{ji}, 0)}{\max|W|}

optionally rounded to ``levels`` conductance levels, then perturbed once per programming by device-to-device
variation :math:`G \leftarrow G(1 + \sigma_{d2d}\,\mathcal N(0, 1))`.  Rows (inputs) and columns (outputs) are cut
into ``tile x tile`` crossbars; the partial sums of the tiles are added digitally.  Inputs drive the rows at
:math:`V_i = V_{read}\,x_i` (spikes: :math:`V_{read}` or 0; analog inputs are scaled to :math:`[0, V_{read}]`
and split into positive and negative phases).  The output is
:math:`y_j = (I^+_j - I^-_j)\,\max|W| / ((G_{on} - G_{off}) V_{read})` plus the bias.

Circuit non-idealities, per tile (rows driven from the left through :math:`R_{source}`, columns sensed at the
bottom through :math:`R_{sink}` into a virtual ground, one wire segment :math:`R_{wire}` between neighbouring
cells).  With cell currents :math:`I_{ij} = f(G_{ij}, V^{row}_{ij} - V^{col}_{ij})`:

.. math::
    V^{row}_{ij} = V_i - R_{source}\sum_m I_{im} - R_{wire}\sum_{1 \le k \le j}\sum_{m \ge k} I_{im},\qquad
    V^{col}_{ij} = R_{sink}\sum_m I_{mj} + R_{wire}\sum_{i \le k < R-1}\sum_{m \le k} I_{mj}

(Kirchhoff's laws on the word and bit lines), solved by under-relaxed fixed-point iteration from the ideal
currents (relaxation :math:`1/(1+g)`, :math:`g` the loop gain :math:`G_{on}(R_{wire}(R^2+C^2)/2 + R_{source}C +
R_{sink}R)`), vectorised over tiles and inputs, until the currents change by less than ``ir_tol`` (relative)
or after ``ir_iters`` sweeps.  With linear devices the tile is a linear network: its column currents are
:math:`V^\top K` with :math:`K_{i\cdot}` the currents for row :math:`i` alone at 1 V (superposition), solved once
when the weights are programmed, so an MVM costs one matrix product; a non-linear device (``nonlinearity >
0``) is solved per input.  Device I–V non-linearity:
:math:`f(G, V) = G\,V_{read}\,\sinh(\alpha V / V_{read}) / \sinh(\alpha)` (linear as :math:`\alpha \to 0`, exact
at :math:`V = V_{read}`), :math:`\alpha` = ``nonlinearity``.  Cycle-to-cycle (read) variation: each device's
conductance is redrawn per MVM, :math:`G(1 + \sigma_{c2c}\mathcal N)`, whose sum on a column is the Gaussian
:math:`\mathcal N(0, \sigma_{c2c}^2 \sum_i I_{ij}^2)` added to the column current.

With every non-ideality off the layer computes exactly what the original layer computes (card check 1).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.deploy.crossbar import CrossbarConfig, to_crossbar
    >>> net = nn.Sequential(nn.Linear(16, 4))
    >>> s = (torch.rand(3, 16) > 0.5).float()
    >>> torch.equal(to_crossbar(net, CrossbarConfig(tile=8))(s), net(s))
    True
    >>> xb = to_crossbar(net, CrossbarConfig(tile=8, r_wire=5.0, r_source=100.0, r_sink=100.0))
    >>> bool((xb(s) - net(s)).abs().max() > 0)
    True
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .quant import base_type


def _num(name, v, low=0.0, strict=False, allow_none=False):
    if v is None and allow_none:
        return
    bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
        (v <= low if strict else v < low)
    if bad:
        raise ValueError(f"crossbar.{name}: expected a finite number {'>' if strict else '>='} {low}, got {v!r}")


@dataclass(frozen=True)
class CrossbarConfig:
    """Crossbar simulation settings (see the module docstring).  Resistances in ohm, voltages in volt."""

    tile: int = 64
    r_on: float = 20e3
    on_off: float = 10.0
    levels: int | None = None
    sigma_d2d: float = 0.0
    sigma_c2c: float = 0.0
    nonlinearity: float = 0.0
    r_wire: float = 0.0
    r_source: float = 0.0
    r_sink: float = 0.0
    v_read: float = 0.25
    ir_iters: int = 100
    ir_tol: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.tile, bool) or not isinstance(self.tile, int) or self.tile < 1:
            raise ValueError(f"crossbar.tile: expected an integer >= 1 (rows = columns of one crossbar), got "
                             f"{self.tile!r}")
        if self.levels is not None and (isinstance(self.levels, bool) or not isinstance(self.levels, int)
                                        or self.levels < 2):
            raise ValueError(f"crossbar.levels: expected None (continuous) or an integer >= 2, got {self.levels!r}")
        _num("r_on", self.r_on, strict=True)
        _num("on_off", self.on_off, low=1.0, strict=True)
        for k in ("sigma_d2d", "sigma_c2c", "nonlinearity", "r_wire", "r_source", "r_sink", "ir_tol"):
            _num(k, getattr(self, k))
        _num("v_read", self.v_read, strict=True)
        if isinstance(self.ir_iters, bool) or not isinstance(self.ir_iters, int) or self.ir_iters < 1:
            raise ValueError(f"crossbar.ir_iters: expected an integer >= 1, got {self.ir_iters!r}")

    @property
    def ideal(self) -> bool:
        return (self.levels is None and self.sigma_d2d == 0 and self.sigma_c2c == 0 and self.nonlinearity == 0
                and self.r_wire == 0 and self.r_source == 0 and self.r_sink == 0)

    @property
    def wires(self) -> bool:
        return self.r_wire > 0 or self.r_source > 0 or self.r_sink > 0

    @property
    def g_on(self) -> float:
        return 1.0 / self.r_on

    @property
    def g_off(self) -> float:
        return self.g_on / self.on_off


def _cell_current(G, V, cfg):
    if cfg.nonlinearity == 0:
        return G * V
    a = cfg.nonlinearity
    return G * cfg.v_read * torch.sinh(a * V / cfg.v_read) / math.sinh(a)


def tile_currents(G: torch.Tensor, V: torch.Tensor, cfg: CrossbarConfig, generator=None) -> torch.Tensor:
    """Column currents of crossbar tiles: ``G [..., rows, cols]`` (S), row voltages ``V [N, ..., rows]`` ->
    ``[N, ..., cols]`` (A), with the wire resistances, the I–V non-linearity and read noise of ``cfg``."""
    if not cfg.wires:
        if cfg.nonlinearity == 0:
            I_col = torch.einsum("n...r,...rc->n...c", V, G)
            I2 = torch.einsum("n...r,...rc->n...c", V * V, G * G) if cfg.sigma_c2c else None
        else:
            I = _cell_current(G.unsqueeze(0), V.unsqueeze(-1), cfg)
            I_col, I2 = I.sum(-2), (I * I).sum(-2) if cfg.sigma_c2c else None
    else:
        Vr = V.unsqueeze(-1)                                    # [N, ..., rows, 1]
        I = _cell_current(G.unsqueeze(0), Vr, cfg)              # ideal start
        R, C = G.shape[-2:]
        gain = cfg.g_on * (cfg.r_wire * (R * R + C * C) / 2 + cfg.r_source * C + cfg.r_sink * R)
        omega = 1.0 / (1.0 + gain)                              # under-relaxation: converges for any gain
        for _ in range(cfg.ir_iters):
            # word line: current in the segment before column k = sum of the cell currents at columns >= k
            seg_row = I.flip(-1).cumsum(-1).flip(-1)            # [..., k] feeds columns >= k
            drop_row = seg_row.cumsum(-1) - seg_row[..., :1]     # wire segments 1..j (cell to cell)
            v_row = Vr - cfg.r_source * seg_row[..., :1] - cfg.r_wire * drop_row
            # bit line: current in the segment below row k = sum of the cell currents at rows <= k
            seg_col = I.cumsum(-2)
            rise = seg_col.flip(-2).cumsum(-2).flip(-2) - seg_col[..., -1:, :]   # segments i..R-2
            v_col = cfg.r_sink * seg_col[..., -1:, :] + cfg.r_wire * rise
            I_new = _cell_current(G.unsqueeze(0), v_row - v_col, cfg)
            step = I_new - I
            I = I + omega * step
            done = step.abs().max() <= cfg.ir_tol * I.abs().max().clamp_min(1e-30)
            if done:
                break
        I_col, I2 = I.sum(-2), (I * I).sum(-2) if cfg.sigma_c2c else None
    if cfg.sigma_c2c:
        noise = torch.randn(I_col.shape, generator=generator, dtype=I_col.dtype, device="cpu").to(I_col.device)
        I_col = I_col + cfg.sigma_c2c * I2.clamp_min(0).sqrt() * noise
    return I_col


class CrossbarMap(nn.Module):
    """One layer's weights programmed on tiles: conductances ``Gp``, ``Gn`` ``[row_tiles, col_tiles, tile,
    tile]`` (fixed after programming: levels and device-to-device variation included)."""

    def __init__(self, weight2d: torch.Tensor, cfg: CrossbarConfig, generator: torch.Generator):
        super().__init__()
        out, fan_in = weight2d.shape
        t = cfg.tile
        self.cfg, self.out, self.fan_in = cfg, out, fan_in
        self.rt, self.ct = -(-fan_in // t), -(-out // t)
        w = weight2d.detach().t()                                  # [fan_in, out]: rows are inputs
        w_max = float(w.abs().max()) or 1.0
        self.w_max = w_max
        dg = cfg.g_on - cfg.g_off
        gp = (w.clamp_min(0) / w_max)
        gn = ((-w).clamp_min(0) / w_max)
        if cfg.levels is not None:
            gp = torch.round(gp * (cfg.levels - 1)) / (cfg.levels - 1)
            gn = torch.round(gn * (cfg.levels - 1)) / (cfg.levels - 1)
        gp, gn = cfg.g_off + dg * gp, cfg.g_off + dg * gn
        full = w.new_full((self.rt * t, self.ct * t), cfg.g_off)   # unused cells sit at G_off
        Gp, Gn = full.clone(), full.clone()
        Gp[:fan_in, :out], Gn[:fan_in, :out] = gp, gn
        if cfg.sigma_d2d:
            for G in (Gp, Gn):
                eps = torch.randn(G.shape, generator=generator, dtype=G.dtype).to(G.device)
                G.mul_(1 + cfg.sigma_d2d * eps).clamp_(min=0)
        shape = (self.rt, t, self.ct, t)
        self.register_buffer("Gp", Gp.reshape(shape).permute(0, 2, 1, 3).contiguous())
        self.register_buffer("Gn", Gn.reshape(shape).permute(0, 2, 1, 3).contiguous())
        # linear devices: the tile is a linear network, so by superposition its column currents are V @ K with
        # K[i, :] the currents for row i alone at 1 V -- solved once here, exact to the solver's tolerance
        self.linear = cfg.nonlinearity == 0
        if self.linear:
            self.register_buffer("Kp", self._transfer(self.Gp))
            self.register_buffer("Kn", self._transfer(self.Gn))

    def _transfer(self, G):
        if not self.cfg.wires:
            return G
        t = self.cfg.tile
        eye = torch.eye(t, dtype=G.dtype, device=G.device) * self.cfg.v_read
        V = eye.reshape(t, 1, 1, t).expand(t, self.rt, self.ct, t)
        quiet = CrossbarConfig(**{**self.cfg.__dict__, "sigma_c2c": 0.0})
        I = tile_currents(G, V, quiet)                              # [t (driven row), rt, ct, cols]
        return (I / self.cfg.v_read).permute(1, 2, 0, 3).contiguous()

    def _currents(self, G, K, V, generator):
        if not self.linear:
            return tile_currents(G, V, self.cfg, generator)
        I = torch.einsum("nrxi,rcij->nrcj", V, K)
        if self.cfg.sigma_c2c:
            I2 = torch.einsum("nrxi,rcij->nrcj", V * V, G * G)
            noise = torch.randn(I.shape, generator=generator, dtype=I.dtype, device="cpu").to(I.device)
            I = I + self.cfg.sigma_c2c * I2.clamp_min(0).sqrt() * noise
        return I

    def mvm(self, x: torch.Tensor, generator=None, chunk: int = 4096) -> torch.Tensor:
        """``x [N, fan_in]`` -> ``[N, out]`` computed on the tiles (without the bias)."""
        cfg, t = self.cfg, self.cfg.tile
        events = bool(((x >= 0) & (x <= 1) & (x == torch.round(x))).all())
        scale = 1.0 if events else float(x.abs().max()) or 1.0
        phases = [(x.clamp_min(0), 1.0)] if events or bool((x >= 0).all()) else \
            [(x.clamp_min(0), 1.0), ((-x).clamp_min(0), -1.0)]
        y = x.new_zeros(x.shape[0], self.out)
        dg = cfg.g_on - cfg.g_off
        Kp, Kn = (self.Kp, self.Kn) if self.linear else (None, None)
        for xp, sign in phases:
            V = F.pad(xp / scale * cfg.v_read, (0, self.rt * t - self.fan_in)).reshape(-1, self.rt, 1, t)
            for i in range(0, V.shape[0], chunk):
                Vc = V[i:i + chunk].to(self.Gp.dtype)
                Ip = self._currents(self.Gp, Kp, Vc, generator)     # [n, rt, ct, t]
                In = self._currents(self.Gn, Kn, Vc, generator)
                I = (Ip - In).sum(1).reshape(Vc.shape[0], self.ct * t)[:, :self.out]
                y[i:i + chunk] += sign * (I * (self.w_max * scale / (dg * cfg.v_read))).to(y.dtype)
        return y


class CrossbarLayer(nn.Module):
    """A Linear or Conv2d computed on crossbars (:class:`CrossbarMap`); ideal configs run the layer itself."""

    def __init__(self, layer: nn.Module, cfg: CrossbarConfig, generator: torch.Generator):
        super().__init__()
        if base_type(layer) not in (nn.Linear, nn.Conv2d):
            raise ValueError(f"to_crossbar: layer type {type(layer).__name__} cannot be mapped; allowed: Linear, "
                             f"Conv2d")
        self.layer = layer
        self.cfg = cfg
        self.generator = generator
        self.map = None if cfg.ideal else CrossbarMap(self._weight2d(), cfg, generator)

    def _weight2d(self):
        w = self.layer.weight.detach()
        return w.reshape(w.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.map is None:
            return self.layer(x)
        m = self.layer
        if isinstance(m, nn.Linear):
            lead = x.shape[:-1]
            y = self.map.mvm(x.reshape(-1, x.shape[-1]), self.generator).reshape(*lead, m.out_features)
        else:
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ValueError(f"to_crossbar: Conv2d with groups={m.groups}, padding={m.padding!r}, "
                                 f"padding_mode={m.padding_mode!r} cannot be mapped; allowed: groups=1, numeric "
                                 f"zero padding")
            B, _, H, W = x.shape
            cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)      # [B, C*k*k, L]
            Ho = (H + 2 * m.padding[0] - m.dilation[0] * (m.kernel_size[0] - 1) - 1) // m.stride[0] + 1
            Wo = (W + 2 * m.padding[1] - m.dilation[1] * (m.kernel_size[1] - 1) - 1) // m.stride[1] + 1
            y = self.map.mvm(cols.transpose(1, 2).reshape(-1, cols.shape[1]), self.generator)
            y = y.reshape(B, Ho * Wo, m.out_channels).transpose(1, 2).reshape(B, m.out_channels, Ho, Wo)
        if m.bias is not None:
            y = y + (m.bias if isinstance(m, nn.Linear) else m.bias.reshape(1, -1, 1, 1))
        return y


def to_crossbar(model: nn.Module, cfg: CrossbarConfig, filter_fn=None) -> nn.Module:
    """A copy of ``model`` whose Linear / Conv2d layers (or those ``filter_fn(module, name)`` selects) run on
    crossbars.  Weights are programmed once (``cfg.seed`` draws the device-to-device variation)."""
    if not isinstance(cfg, CrossbarConfig):
        raise ValueError(f"cfg: expected a CrossbarConfig, got {type(cfg).__name__}")
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(int(cfg.seed))
    fn = filter_fn or (lambda m, n: isinstance(m, (nn.Linear, nn.Conv2d)))
    targets = [(n, m) for n, m in model.named_modules() if n and fn(m, n) and not isinstance(m, CrossbarLayer)]
    if isinstance(model, (nn.Linear, nn.Conv2d)) and fn(model, ""):
        return CrossbarLayer(model, cfg, g)
    if not targets:
        raise ValueError(f"to_crossbar: model {type(model).__name__} has no layer to map (filter_fn matched "
                         f"nothing); allowed: a model with Linear / Conv2d layers")
    for name, m in targets:
        if base_type(m) not in (nn.Linear, nn.Conv2d):
            raise ValueError(f"to_crossbar: layer {name!r} ({base_type(m).__name__}) matches the filter but cannot be "
                             f"mapped; allowed: Linear, Conv2d; exclude it with filter_fn")
    for name, m in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, CrossbarLayer(m, cfg, g))
    return model


__all__ = ["CrossbarConfig", "CrossbarMap", "CrossbarLayer", "to_crossbar", "tile_currents"]
