"""``ConversionConfig``: every choice :func:`spikeforge.convert.convert` makes, as one frozen, validated dataclass."""

from __future__ import annotations

from dataclasses import asdict, dataclass

NORMS = ("max", "percentile", "bound")
MAXPOOLS = ("spiking", "lipool")


def _int(name, v, low):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name}: {v!r}; allowed: an integer >= {low}")
    return v


@dataclass(frozen=True)
class ConversionConfig:
    """How an ANN becomes an IF network.

    - ``T``: time steps the converted SNN runs for (``snn.T``; change it later freely).
    - ``norm``: where each IF threshold :math:`\\theta` comes from: ``max`` (largest activation on the calibration
      data), ``percentile`` (the ``percentile``-th percentile of the activations, robust normalisation) or
      ``bound`` (the activation's own trainable bound: TCL's ``clip`` and QCFS's :math:`\\lambda`; no data needed).
    - ``percentile``: in (0, 100]; 100 is the maximum.
    - ``per_channel``: one threshold per channel (feature) instead of one per layer.
    - ``v_init``: initial membrane as a fraction of :math:`\\theta` (0.5: the :math:`\\theta/2` start).
    - ``maxpool``: ``lipool`` (lateral-inhibition pooling,
      exact on the cumulative counts: :mod:`spikeforge.convert.lipool`) or ``spiking`` (max over each step's
      spikes, which over-counts: the classic baseline).
    - ``spicalib``: ``None`` or the allowance A >= 0 of SpiCalib's negative calibration spikes
      (:mod:`spikeforge.convert.spicalib`).
    - ``calib_batches``: at most this many calibration batches are used; ``calib_values``: percentiles are
      computed on at most this many values per layer (a uniform random subsample; the maximum is exact).
    - ``backend``: the IF neurons' backend (``auto``, ``reference``, ``cpu``, ...; see docs/neurons.md).
    """

    T: int = 32
    norm: str = "max"
    percentile: float = 100.0
    per_channel: bool = False
    v_init: float = 0.0
    maxpool: str = "lipool"
    spicalib: int | None = None
    calib_batches: int = 64
    calib_values: int = 2_000_000
    seed: int = 0
    backend: str = "auto"

    def __post_init__(self):
        _int("T", self.T, 1)
        if self.norm not in NORMS:
            raise ValueError(f"norm: {self.norm!r}; allowed: {', '.join(NORMS)}")
        p = self.percentile
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 100.0:
            raise ValueError(f"percentile: {p!r}; allowed: a number in (0, 100] (100 = the maximum)")
        if not isinstance(self.per_channel, bool):
            raise ValueError(f"per_channel: {self.per_channel!r}; allowed: true or false")
        v = self.v_init
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise ValueError(f"v_init: {v!r}; allowed: a number in [0, 1) (initial membrane / threshold)")
        if self.maxpool not in MAXPOOLS:
            raise ValueError(f"maxpool: {self.maxpool!r}; allowed: {', '.join(MAXPOOLS)}")
        if self.spicalib is not None:
            _int("spicalib", self.spicalib, 0)
        _int("calib_batches", self.calib_batches, 1)
        _int("calib_values", self.calib_values, 1000)
        _int("seed", self.seed, 0)
        from ..kernels.dispatch import check_backend_name

        check_backend_name(self.backend)

    def to_dict(self) -> dict:
        return asdict(self)


__all__ = ["ConversionConfig", "NORMS", "MAXPOOLS"]
