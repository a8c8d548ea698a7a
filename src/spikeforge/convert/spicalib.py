r"""SpiCalib: negative calibration spikes that retract unjustified early spikes (Li et al., arXiv 2207.02702; card
``spicalib-conversion.md``, rule checked against BrainCog's ``SpiCalib``), and the ``spicalib`` recipe
(percentile normalisation + LIPool + SpiCalib; optional Bayesian optimisation of the per-layer percentiles).

Per neuron, with :math:`t_{last}` the step of its last spike and :math:`\overline{ISI}` the running mean of its
inter-spike intervals (the first counted from step 0): on a step without a spike where
:math:`t - t_{last} > \overline{ISI} + A`, the output is :math:`-1` (a spike retracted); an output that would
make the running sum of outputs negative is set to 0, so neurons that never fired are untouched.  ``A`` is the
allowance (``ConversionConfig.spicalib``).

Example:
    >>> import torch
    >>> from spikeforge.convert.spicalib import spicalib
    >>> s = torch.tensor([1., 1., 0., 0., 0., 0.]).reshape(6, 1)
    >>> spicalib(s, allowance=1).flatten().tolist()
    [1.0, 1.0, 0.0, -1.0, -1.0, 0.0]
"""

from __future__ import annotations

import torch


def spicalib(s_seq: torch.Tensor, allowance: int) -> torch.Tensor:
    """Calibrated outputs of the spike train ``s_seq [T, ...]`` (values in {-1, 0, 1}); causal."""
    if isinstance(allowance, bool) or not isinstance(allowance, int) or allowance < 0:
        raise ValueError(f"allowance: {allowance!r}; allowed: an integer >= 0")
    s_seq = s_seq
    zero = torch.zeros_like(s_seq[0])
    t_last, isi, n, total = zero.clone(), zero.clone(), zero.clone(), zero.clone()
    out = []
    for t in range(s_seq.shape[0]):
        fired = s_seq[t] > 0
        n = n + fired.to(n.dtype)
        isi = torch.where(fired, (t - t_last + isi * (n - 1)) / n.clamp_min(1), isi)
        t_last = torch.where(fired, torch.full_like(t_last, float(t)), t_last)
        o = s_seq[t] - ((~fired) & (t - t_last > isi + allowance)).to(s_seq.dtype)
        o = torch.where(total + o < 0, torch.zeros_like(o), o)
        total = total + o
        out.append(o)
    return torch.stack(out)


__all__ = ["spicalib"]


# ------------------------------------------------------------------------------------------------ the recipe
def _bo_percentiles(ann, data, labels, cfg, trials: int, T: int):
    """Per-layer percentiles in [99, 100] maximising the SNN's accuracy at ``T`` on ``(data, labels)`` with optuna's
    default (TPE) sampler; ``{site: percentile}``."""
    try:
        import optuna
    except ImportError:
        raise ValueError("bo_trials: Bayesian optimisation needs the optional package optuna "
                         "(pip install spikeforge[optuna]); use bo_trials=0") from None
    import dataclasses

    from .core import build_snn, calibrate, prepare_ann
    from .simulate import accuracy_vs_T

    net, zoo = prepare_ann(ann)
    by_p = {}

    def thetas_at(p):
        if p not in by_p:
            by_p[p] = calibrate(net, zoo, data, dataclasses.replace(cfg, norm="percentile", percentile=p))
        return by_p[p]

    sites = list(thetas_at(100.0))

    def objective(trial):
        ps = {s: round(trial.suggest_float(s, 99.0, 100.0), 2) for s in sites}
        th = {s: thetas_at(p)[s] for s, p in ps.items()}
        snn = build_snn(net, zoo, th, cfg, example=data[:2])
        return accuracy_vs_T(snn, data, labels, Ts=(T,))["acc"][T]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=trials)
    best = {s: round(v, 2) for s, v in study.best_params.items()}
    return net, zoo, {s: thetas_at(p)[s] for s, p in best.items()}, best


def spicalib_recipe(ann, calibration_data=None, *, bo_trials: int = 0, bo_samples: int = 256, **options):
    """Percentile (99.95, BrainCog's default) normalisation + LIPool + SpiCalib (allowance 2); with ``bo_trials``
    > 0 the per-layer percentiles are chosen by Bayesian optimisation (optuna) on labelled calibration data
    ``(x, y)``."""
    from .core import build_snn, convert
    from .registry import make_config

    cfg, _ = make_config("spicalib", {"norm": "percentile", "percentile": 99.95, "maxpool": "lipool",
                                      "spicalib": 2}, options)
    if isinstance(bo_trials, bool) or not isinstance(bo_trials, int) or bo_trials < 0:
        raise ValueError(f"bo_trials: {bo_trials!r}; allowed: an integer >= 0 (0 = no Bayesian optimisation)")
    if bo_trials == 0:
        return convert(ann, cfg, calibration_data)
    if not (isinstance(calibration_data, (tuple, list)) and len(calibration_data) == 2
            and all(torch.is_tensor(t) for t in calibration_data)):
        raise ValueError("calibration_data: Bayesian optimisation (bo_trials > 0) needs labelled data, a pair "
                         "(x [N, ...], y [N]) of tensors")
    x, y = calibration_data
    net, zoo, thetas, _ = _bo_percentiles(ann, x[:bo_samples], y[:bo_samples], cfg, bo_trials, cfg.T)
    return build_snn(net, zoo, thetas, cfg, example=x[:2])


def _register():
    from .registry import RECIPES

    RECIPES.register("spicalib", help="99.95th percentile + LIPool + SpiCalib negative spikes (Li et al. 2022); "
                                      "bo_trials>0: optuna-tuned percentiles")(spicalib_recipe)
    RECIPES.register("lipool", help="99.99th percentile + lateral-inhibition max pooling only (Li et al. 2022)")(
        _lipool_only)


def _lipool_only(ann, calibration_data=None, **options):
    from .core import convert
    from .registry import make_config

    cfg, _ = make_config("lipool", {"norm": "percentile", "percentile": 99.99, "maxpool": "lipool"}, options)
    return convert(ann, cfg, calibration_data)


_register()
__all__ += ["spicalib_recipe"]
