r"""Energy profiles: a cost in pJ per operation, and the pricing of :class:`~spikeforge.energy.counters.OpCounts`.

.. math::
    E = e_{ac}\,\mathrm{SynOps} + e_{mac}\,\mathrm{MACs} + e_{nu}\,\mathrm{neuron\ updates}
        + e_{rd}\,(\mathrm{weight\ reads} + \mathrm{state\ reads}) + e_{wr}\,\mathrm{state\ writes}

Named profiles come from M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014
(45 nm, 0.9 V): 32-bit float add 0.9 pJ, mult 3.7 pJ; 32-bit int add 0.1 pJ, mult 3.1 pJ; 16-bit float add
0.4 pJ, mult 1.1 pJ; 8-bit int add 0.03 pJ, mult 0.2 pJ; a 64-bit read from an 8 KB SRAM 10 pJ.  Derived
here: AC = one add, MAC = mult + add, neuron update (leak multiply, input add, reset add) = mult + 2 adds,
a memory word read or write = 10 pJ x (word bits / 64).  ``*-compute`` profiles price memory at 0, the
convention of most SNN papers (:math:`E = 0.9\,\mathrm{pJ}\cdot\mathrm{SynOps} + 4.6\,\mathrm{pJ}\cdot
\mathrm{MACs}`).  A YAML file gives a user profile (``name``, ``ops: {ac, mac, neuron_update, mem_read,
mem_write}`` in pJ).

Example:
    >>> from spikeforge.energy import get_profile
    >>> p = get_profile("horowitz45-fp32-compute")
    >>> p.costs["ac"], p.costs["mac"]
    (0.9, 4.6)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

OPS = ("ac", "mac", "neuron_update", "mem_read", "mem_write")
HOROWITZ_2014 = ("M. Horowitz, Computing's energy problem (and what we can do about it), ISSCC 2014, 45 nm "
                 "(table of add/mult/SRAM energies)")
HOROWITZ_TABLE = {  # pJ, 45 nm 0.9 V
    "int8": {"add": 0.03, "mult": 0.2}, "int32": {"add": 0.1, "mult": 3.1},
    "fp16": {"add": 0.4, "mult": 1.1}, "fp32": {"add": 0.9, "mult": 3.7},
}
SRAM_8KB_64BIT_PJ = 10.0


@dataclass(frozen=True)
class EnergyProfile:
    """Costs in pJ per operation (every op of :data:`OPS`, each >= 0)."""

    name: str
    costs: dict
    source: str = ""

    def __post_init__(self):
        check_costs(self.costs, f"profile {self.name!r}")


def check_costs(costs, where: str) -> None:
    if not isinstance(costs, dict):
        raise ValueError(f"{where}: ops: expected a mapping of {', '.join(OPS)} to pJ, got {costs!r}")
    for op in OPS:
        if op not in costs:
            raise ValueError(f"{where}: ops.{op}: missing; required ops: {', '.join(OPS)}")
    for op, v in costs.items():
        if op not in OPS:
            raise ValueError(f"{where}: ops.{op}: unknown op; allowed: {', '.join(OPS)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}: ops.{op}: expected a finite cost >= 0 in pJ, got {v!r}")


def _horowitz(kind: str, bits: int, memory: bool) -> dict:
    t = HOROWITZ_TABLE[kind]
    mem = SRAM_8KB_64BIT_PJ * bits / 64 if memory else 0.0
    return {"ac": t["add"], "mac": round(t["mult"] + t["add"], 6), "neuron_update": round(t["mult"] + 2 * t["add"], 6),
            "mem_read": mem, "mem_write": mem}


PROFILES: dict[str, EnergyProfile] = {}
for _kind, _bits in (("fp32", 32), ("int32", 32), ("fp16", 16), ("int8", 8)):
    for _mem in (True, False):
        _name = f"horowitz45-{_kind}" + ("" if _mem else "-compute")
        PROFILES[_name] = EnergyProfile(_name, _horowitz(_kind, _bits, _mem), HOROWITZ_2014)
DEFAULT_PROFILE = "horowitz45-fp32-compute"


def load_profile(path) -> EnergyProfile:
    """A user profile from a YAML file: ``name: ...`` and ``ops: {ac: .., mac: .., neuron_update: ..,
    mem_read: .., mem_write: ..}`` (pJ).  A missing op or a negative cost raises naming it."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"profile: no such file {str(p)!r}")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict) or "ops" not in data:
        raise ValueError(f"profile {str(p)!r}: expected a mapping with 'ops' (and optional 'name', 'source'), "
                         f"got {type(data).__name__}")
    return EnergyProfile(str(data.get("name", p.stem)), dict(data["ops"] or {}), str(data.get("source", str(p))))


def get_profile(name_or_path) -> EnergyProfile:
    """A named profile (:data:`PROFILES`) or a YAML file (a path ending in ``.yaml``/``.yml``)."""
    if isinstance(name_or_path, EnergyProfile):
        return name_or_path
    s = str(name_or_path)
    if s.endswith((".yaml", ".yml")):
        return load_profile(s)
    if s not in PROFILES:
        raise ValueError(f"profile: unknown value {s!r}; allowed: {', '.join(PROFILES)} or a .yaml file")
    return PROFILES[s]


def layer_energy(lo, profile: EnergyProfile) -> dict:
    """Energy in pJ of one :class:`LayerOps` by cost term, and its total."""
    c = profile.costs
    e = {"ac": lo.synops * c["ac"], "mac": lo.macs * c["mac"], "neuron_update": lo.neuron_updates * c["neuron_update"],
         "mem_read": (lo.weight_reads + lo.state_reads) * c["mem_read"], "mem_write": lo.state_writes * c["mem_write"]}
    e["total"] = sum(e.values())
    return e


def energy_table(counts, profile="horowitz45-fp32-compute") -> list[dict]:
    """One row per layer: ops, energy (pJ) by term, total and share of the model's energy."""
    prof = get_profile(profile)
    rows = []
    for name, lo in counts.layers.items():
        e = layer_energy(lo, prof)
        rows.append({"layer": name, "type": lo.type, "synops": lo.synops, "macs": lo.macs,
                     "neuron_updates": lo.neuron_updates, "spikes": lo.spikes,
                     "mem_accesses": lo.weight_reads + lo.state_reads + lo.state_writes,
                     **{f"e_{k}": v for k, v in e.items()}})
    tot = sum(r["e_total"] for r in rows)
    for r in rows:
        r["share"] = r["e_total"] / tot if tot else 0.0
    return rows


def total_energy(counts, profile="horowitz45-fp32-compute") -> float:
    """Total energy in pJ of :class:`OpCounts` under ``profile``."""
    return float(sum(r["e_total"] for r in energy_table(counts, profile)))


__all__ = ["OPS", "EnergyProfile", "PROFILES", "DEFAULT_PROFILE", "HOROWITZ_TABLE", "HOROWITZ_2014", "load_profile",
           "get_profile", "energy_table", "total_energy", "layer_energy", "check_costs"]
