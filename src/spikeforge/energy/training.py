r"""BPTT training energy, SATA-style (Yin et al., "SATA: Sparsity-Aware Training Accelerator for Spiking Neural
Networks", IEEE TCAD 2023, arXiv 2204.05422; formulas and constants of the official simulator,
``training_energy_cal/`` of github.com/RuokaiYin/SATA_Sim).

Per conv layer (C in, K out, kernel :math:`R_h \times R_w`, input :math:`H_h \times H_w`, output
:math:`E_h \times E_w`), per sample, T steps, input-spike sparsity :math:`s_s`, membrane-gradient sparsity
:math:`s_{du}`:

.. math::
    N_{LIF} = N_{PGU} = K E_h E_w T,\quad
    N_{MAC}^{fwd} = N_{MAC}^{wup} = (1-s_s)\,C R_h R_w K E_h E_w T,\quad
    N_{MAC}^{bwd} = (1-s_{du})\,C R_h R_w K H_h H_w T

(a linear layer: :math:`C R_h R_w \to` in, :math:`K \to` out, :math:`E = H = 1`, dense as in the official code),
plus DRAM / global-buffer / scratchpad accesses per stage counted from weights, membranes and spikes packed
:math:`b` to a word (``memory_counts``).  Each count is priced per op (16-bit, pJ): forward MAC = acc + and
(spikes gate the accumulate), LIF = add + comp + 2 mux + 3 reg + shift, PGU = mul + 2 add + mux + 2 shift,
backward MAC = mul + acc, weight-update MAC = acc + and; forward costs scale by :math:`b/16`.  Memory: DRAM
55.58, SRAM 1.95, scratchpad 0.2779 pJ per access (CACTI, the simulator's values).

The ANN of the same shape is the same model with :math:`T = 1`, no sparsity, real-valued activations (forward
and weight-update MAC = mul + acc, activations one word each, 16-bit).  The official script's linear branch
overwrites (``=``) instead of adding to the forward MAC count, and it skips the output layer (type
``out_linear``); here both are counted.

Example:
    >>> from spikeforge.energy.training import VGG5_CIFAR10, sata_energy, ann_training_energy
    >>> snn = sata_energy(VGG5_CIFAR10, T=4, s_s=0.9, s_du=0.7)
    >>> round(snn["total"] / ann_training_energy(VGG5_CIFAR10)["total"], 2)
    1.09
"""

from __future__ import annotations

import math
from dataclasses import dataclass

OP_PJ = {"mul": 0.239, "acc": 0.0389, "add": 0.00967, "and": 0.000794, "comp": 0.00309, "mux": 0.00172,
         "reg": 0.0301, "sft": 0.00605}
"""SATA's 16-bit per-op energies (pJ), ``energy_configs.py``."""
MEM_PJ = {"dram": 55.58, "glb": 1.95, "spad": 0.2779}
"""Per-access energies (pJ) of DRAM, global buffer (SRAM) and scratchpad, ``mem_configs.py``."""
OP_MIX = {
    "lif": {"add": 1, "comp": 1, "mux": 2, "reg": 3, "sft": 1},
    "mac_fwd": {"acc": 1, "and": 1},
    "pgu": {"mul": 1, "add": 2, "mux": 1, "sft": 2},
    "mac_bwd": {"mul": 1, "acc": 1},
    "mac_wup": {"acc": 1, "and": 1},
}
"""Per-PE operation mix of each workload item, ``sata_config.yaml``."""
ANN_MAC = OP_PJ["mul"] + OP_PJ["acc"]
"""One ANN MAC (mul + acc, 0.2779 pJ): SATA reports energies in these units."""
STAGES = {"fwd": ("lif", "mac_fwd", "dram_fwd", "glb_fwd", "spad_fwd"),
          "bwd": ("pgu", "mac_bwd", "dram_bwd", "glb_bwd", "spad_bwd"),
          "wup": ("mac_wup", "dram_wup", "glb_wup", "spad_wup")}


@dataclass(frozen=True)
class SATALayer:
    """One layer's shape: ``kind`` "conv" (C, K, R = (R_h, R_w), H = (H_h, H_w) input, E = output size) or
    "linear" (C = in, K = out)."""

    name: str
    kind: str
    C: int
    K: int
    R: tuple = (1, 1)
    H: tuple = (1, 1)
    E: tuple = (1, 1)

    def __post_init__(self):
        if self.kind not in ("conv", "linear"):
            raise ValueError(f"kind: unknown value {self.kind!r}; allowed: conv, linear")
        for key in ("C", "K"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key}: expected an integer >= 1, got {v!r}")

    @property
    def weights(self) -> int:
        return self.K * self.C * self.R[0] * self.R[1]

    @property
    def outputs(self) -> int:
        return self.K * self.E[0] * self.E[1]

    @property
    def inputs(self) -> int:
        return self.C * self.H[0] * self.H[1]


def _conv(name, H, C, R, K, E):
    return SATALayer(name, "conv", C, K, (R, R), (H, H), (E, E))


VGG5_CIFAR10 = (_conv("conv1", 32, 3, 3, 64, 32), _conv("conv2", 16, 64, 3, 128, 16),
                _conv("conv3", 16, 128, 3, 128, 16), SATALayer("lin4", "linear", 8192, 1024),
                SATALayer("lin5", "linear", 1024, 10))
"""The official simulator's ``vgg5_cifar10.yaml``."""


def _check_fraction(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
        raise ValueError(f"{name}: expected a sparsity in [0, 1], got {v!r}")
    return float(v)


def workload(layer: SATALayer, T: int, s_s: float, s_du: float, b: int, real_activations: bool = False) -> dict:
    """Operation and memory-access counts of one layer for one training sample (``get_workload.py``)."""
    w, out, inp = layer.weights, layer.outputs, layer.inputs
    pk = 1.0 if real_activations else 1.0 / b          # spikes are bit-packed b to a word
    if layer.kind == "conv":
        mac_f = (1 - s_s) * layer.C * layer.R[0] * layer.R[1] * out * T
        mac_b = (1 - s_du) * layer.C * layer.R[0] * layer.R[1] * layer.K * layer.H[0] * layer.H[1] * T
    else:
        mac_f = mac_b = float(w * T)
    return {
        "lif": out * T, "pgu": out * T, "mac_fwd": mac_f, "mac_bwd": mac_b, "mac_wup": mac_f,
        "dram_fwd": w + (out + pk * inp) * T,
        "glb_fwd": 2 * (w + (out + pk * inp) * T),
        "spad_fwd": 2 * (w + T * pk * inp),
        "dram_bwd": T * (out + pk * inp),
        "glb_bwd": 7 * T * out + 2 * T * pk * inp + w,
        "spad_bwd": w + T * out,
        "dram_wup": 2 * w,
        "glb_wup": 2 * (1 + T) * w + T * (pk * inp + out),
        "spad_wup": 2 * (1 + T) * w + T * (pk * inp + out) + 2 * T * w,
    }


def unit_energy(b: int, real_activations: bool = False) -> dict:
    """pJ per workload item (``get_arch_energy.py``); forward items scale by ``b / 16``."""
    f = 1.0 if real_activations else b / 16
    e = {k: sum(OP_PJ[op] * n for op, n in mix.items()) for k, mix in OP_MIX.items()}
    e["lif"] *= f
    e["mac_fwd"] = ANN_MAC if real_activations else e["mac_fwd"] * f
    if real_activations:
        e["mac_wup"] = ANN_MAC
    for stage in ("fwd", "bwd", "wup"):
        for m, pj in MEM_PJ.items():
            e[f"{m}_{stage}"] = pj * (f if stage == "fwd" else 1.0)
    return e


def sata_energy(layers, T: int, s_s=0.9, s_du: float = 0.7, fwd_bits: int = 16,
                real_activations: bool = False) -> dict:
    """BPTT training energy (pJ per sample) of ``layers`` (:class:`SATALayer` s): ``{"total", "fwd", "bwd",
    "wup", "compute", "memory", "layers": {name: pJ}, "items": {item: pJ}}``.  ``s_s`` may be one value or one per
    layer (measured input sparsities).  Defaults: the simulator's sparsities (0.9, 0.7), 16-bit operands."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T: expected an integer >= 1, got {T!r}")
    if isinstance(fwd_bits, bool) or not isinstance(fwd_bits, int) or not 1 <= fwd_bits <= 16:
        raise ValueError(f"fwd_bits: expected an integer in 1..16, got {fwd_bits!r}")
    layers = list(layers)
    s_list = list(s_s) if isinstance(s_s, (list, tuple)) else [s_s] * len(layers)
    if len(s_list) != len(layers):
        raise ValueError(f"s_s: expected one sparsity or {len(layers)} (one per layer), got {len(s_list)}")
    s_du = _check_fraction("s_du", s_du)
    unit = unit_energy(fwd_bits, real_activations)
    items = dict.fromkeys(unit, 0.0)
    per_layer = {}
    for layer, s in zip(layers, s_list):
        wl = workload(layer, T, _check_fraction("s_s", s), s_du, fwd_bits, real_activations)
        per_layer[layer.name] = sum(wl[k] * unit[k] for k in wl)
        for k in wl:
            items[k] += wl[k] * unit[k]
    out = {stage: sum(items[k] for k in keys) for stage, keys in STAGES.items()}
    out["compute"] = sum(items[k] for k in ("lif", "mac_fwd", "pgu", "mac_bwd", "mac_wup"))
    out["memory"] = sum(v for k, v in items.items() if "_" in k and k.split("_")[0] in MEM_PJ)
    out["total"] = sum(items.values())
    out["layers"], out["items"] = per_layer, items
    return out


def ann_training_energy(layers) -> dict:
    """Training energy (pJ per sample) of the same-shape ANN: T = 1, dense, real-valued 16-bit activations."""
    return sata_energy(layers, T=1, s_s=0.0, s_du=0.0, fwd_bits=16, real_activations=True)


def layers_from_counts(counts) -> tuple[list[SATALayer], list[float]]:
    """SATA layer shapes of every Linear/Conv2d in :class:`~spikeforge.energy.OpCounts` (from the shapes the
    counter saw) and their measured input-spike sparsities (0 for an analog-input layer)."""
    layers, sparsities = [], []
    for name, lo in counts.layers.items():
        if not lo.fan_in or not lo.in_shape:
            continue
        if len(lo.kernel) == 2 and len(lo.in_shape) == 3:
            C, Hh, Hw = lo.in_shape
            K, Eh, Ew = lo.out_shape
            layers.append(SATALayer(name, "conv", int(C), int(K), tuple(lo.kernel), (int(Hh), int(Hw)),
                                    (int(Eh), int(Ew))))
        else:
            layers.append(SATALayer(name, "linear", int(lo.fan_in), int(lo.out_shape[-1])))
        sparsities.append(min(max(lo.input_sparsity, 0.0), 1.0))
    return layers, sparsities


__all__ = ["SATALayer", "VGG5_CIFAR10", "OP_PJ", "MEM_PJ", "OP_MIX", "ANN_MAC", "workload", "unit_energy",
           "sata_energy", "ann_training_energy", "layers_from_counts"]
