r"""IF, LIF and PLIF neurons as pure functions over a whole time-major sequence ``[T, B, ...]``.

Update (Fang et al. 2021; SpikingJelly's multi-step ``LIFNode`` conventions), with :math:`k = 1/\tau`:

.. math::
    h_t = v_{t-1} + k\,(x_t - (v_{t-1} - v_{reset}))  \quad\text{(decay\_input=True)},\qquad
    h_t = v_{t-1} - k\,(v_{t-1} - v_{reset}) + x_t    \quad\text{(decay\_input=False)}

:math:`s_t = H(h_t - \vartheta)` (spike iff :math:`h_t \ge \vartheta`); hard reset
:math:`v_t = h_t(1-s_t) + v_{reset} s_t`, or soft reset :math:`v_t = h_t - \vartheta s_t` when
``v_reset=None`` (the decay then pulls towards 0).  IF is :math:`h_t = v_{t-1} + x_t`.  PLIF learns
:math:`w` with :math:`k = \sigma(w)`.  Dynamics defaults equal SpikingJelly's ``LIFNode`` (tau 2, threshold 1,
reset 0, decay_input True); the default surrogate is ATan with alpha 2 (SpikingJelly 2.0's ``LIFNode``
defaults to ``Sigmoid(alpha=4)``: pass ``surrogate="sigmoid"`` to match its gradients too).  snnTorch's ``Leaky`` spikes on a strict ``>`` and resets from the previous
step's spike; Norse's ``LIF`` integrates a synaptic current first — see docs/neurons.md.

Every function returns ``(spikes, state)`` — or ``(spikes, state, v_seq)`` with ``return_v=True``, where
``v_seq`` is the post-reset membrane at every step.

Example:
    >>> import torch
    >>> from spikeforge.functional import lif
    >>> x = torch.full((4, 1, 1), 1.5)
    >>> s, state = lif(x)
    >>> s.flatten().tolist()
    [0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..kernels.cell import Cell, CellExample, register_cell, uniform
from ..kernels.dispatch import check_backend_name, resolve_surrogate, run_cell
from ._checks import check_bool, check_number, check_seq, check_step, check_v_reset


class LIFState(NamedTuple):
    """Membrane potential after the last step, shape ``[B, ...]``."""

    v: torch.Tensor


# fmt: off
def lif_update(x, v, k, vth, vr, hard, decay_input, detach_reset):
    # vr: v_reset for hard reset, 0 for soft reset (the decay pulls towards it); hard, decay_input and
    # detach_reset are 0/1 flags, compiled in as constants (Cell.const_params)
    if decay_input:
        h = v + (x - (v - vr)) * k
    else:
        h = v - (v - vr) * k + x
    s = spike(h - vth)  # noqa: F821  (names bound by spikeforge.kernels.cell)
    sr = ste(s, s * ZERO) if detach_reset else s  # noqa: F821  (value s, no gradient through the reset)
    if hard:
        v1 = h * (ONE - sr) + vr * sr  # noqa: F821
    else:
        v1 = h - sr * vth
    return s, v1


def lif_update_vjp(gs, gv1, x, v, k, vth, vr, hard, decay_input, detach_reset, alpha):
    if decay_input:
        e = x - (v - vr)  # dh/dk
        h = v + e * k
    else:
        e = ZERO - (v - vr)  # noqa: F821
        h = v - (v - vr) * k + x
    u = h - vth
    s = heav(u)  # noqa: F821
    d = dspike(u, alpha)  # noqa: F821
    if hard:
        gst = gs if detach_reset else gs + gv1 * (vr - h)
        gh = gv1 * (ONE - s) + gst * d  # noqa: F821
        gth = ZERO - gst * d  # noqa: F821
        gvr = gv1 * s + gh * k
    else:
        gst = gs if detach_reset else gs - gv1 * vth
        gh = gv1 + gst * d
        gth = ZERO - gst * d - gv1 * s  # noqa: F821
        gvr = gh * k
    gx = gh * k if decay_input else gh
    return gx, gh * (ONE - k), gh * e, gth, gvr, ZERO, ZERO, ZERO  # noqa: F821


def lif_keep(x, v, k, vth, vr, hard, decay_input, detach_reset):
    # what the fused backward stores per step: h (computed as in lif_update) and e = dh/dk
    if decay_input:
        e = x - (v - vr)
        h = v + e * k
    else:
        e = ZERO - (v - vr)  # noqa: F821
        h = v - (v - vr) * k + x
    return h, e


def lif_kept_vjp(gs, gv1, h, e, k, vth, vr, hard, decay_input, detach_reset, alpha):
    # lif_update_vjp from the kept h and e (no x, no v)
    u = h - vth
    s = heav(u)  # noqa: F821
    d = dspike(u, alpha)  # noqa: F821
    if hard:
        gst = gs if detach_reset else gs + gv1 * (vr - h)
        gh = gv1 * (ONE - s) + gst * d  # noqa: F821
        gth = ZERO - gst * d  # noqa: F821
        gvr = gv1 * s + gh * k
    else:
        gst = gs if detach_reset else gs - gv1 * vth
        gh = gv1 + gst * d
        gth = ZERO - gst * d - gv1 * s  # noqa: F821
        gvr = gh * k
    gx = gh * k if decay_input else gh
    return gx, gh * (ONE - k), gh * e, gth, gvr, ZERO, ZERO, ZERO  # noqa: F821
# fmt: on


LIF_CELL = Cell("lif", lif_update, lif_update_vjp, states=("v",),
                params=("k", "v_threshold", "v_reset", "hard", "decay_input", "detach_reset"),
                no_grad_params=("hard", "decay_input", "detach_reset"),
                const_params=("hard", "decay_input", "detach_reset"),
                keep=lif_keep, vjp_kept=lif_kept_vjp, keep_for=((), ("k",)))


def lif_params(k, v_threshold, v_reset, decay_input, detach_reset) -> tuple:
    """The parameters of :data:`LIF_CELL` for the functional arguments (``v_reset=None``: soft reset)."""
    hard = v_reset is not None
    return (k, v_threshold, float(v_reset) if hard else 0.0, float(hard), float(bool(decay_input)),
            float(bool(detach_reset)))


@register_cell(LIF_CELL, help="IF / LIF / PLIF: leaky integrate-and-fire, hard or soft reset (k = 1/tau; IF: k = 0)")
def _lif_examples(dtype, g):
    T, B, C, M = 8, 2, 3, 5

    def example(v_reset, decay_input, detach_reset, label):
        params = lif_params(uniform(g, dtype, (C, 1), 0.25, 1.0, grad=True),
                            uniform(g, dtype, (C, M), 0.6, 1.2, grad=True), v_reset, decay_input, detach_reset)
        states = (uniform(g, dtype, (B, C, M), 0.0, 0.5),)
        return CellExample(uniform(g, dtype, (T, B, C, M), 0.0, 2.0), states, params, label=label)

    return (example(0.1, True, False, "hard reset, decay_input"),
            example(None, False, True, "soft reset, no decay_input, detach_reset"))


def lif_family(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, backend, check):
    """Run :data:`LIF_CELL` over ``x_seq`` with the chosen backend (no argument checks: see :func:`lif`); returns
    ``(spikes, v_T, v_seq or None)``.  ``v0`` is a tensor of one step's shape ``[B, ...]`` or a number (the same
    initial value everywhere); ``k`` and ``v_th`` are numbers or tensors broadcastable to ``[B, ...]``."""
    s, (v_last,), v_seq = run_cell(LIF_CELL, x_seq, (v0,), lif_params(k, v_th, v_reset, decay_input, detach_reset),
                                   surrogate, backend, return_v, check)
    return s, v_last, v_seq


def _initial_state(x_seq, state, v_reset, name="state"):
    if state is None:
        # one number (the backends broadcast it): nothing of size [B, ...] is allocated or saved for backward
        return 0.0 if v_reset is None else v_reset
    shape = x_seq.shape[1:]
    v = state.v if isinstance(state, LIFState) else state
    if not torch.is_tensor(v):
        raise ValueError(f"{name}: expected LIFState(v=tensor) or a tensor, got {type(state).__name__}")
    if v.shape != shape:
        if v.dim() == 0 or v.numel() == 1:
            return v.reshape(()).expand(shape).to(x_seq.dtype)
        raise ValueError(f"{name}.v: shape {tuple(v.shape)} does not match x_seq's [B, ...] = {tuple(shape)}")
    return v.to(x_seq.dtype)


def lif_family_seq(x_seq, state, *, k, v_threshold, v_reset, decay_input, detach_reset, surrogate, backend,
                   return_v, check_inputs):
    """Shared implementation of :func:`if_`, :func:`lif`, :func:`plif` (``k`` = 1/tau, a float or tensor)."""
    check_seq(x_seq)
    check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
    v_reset = check_v_reset(v_reset)
    check_bool("decay_input", decay_input)
    check_bool("detach_reset", detach_reset)
    check_bool("return_v", return_v)
    check_backend_name(backend)
    sg = resolve_surrogate(surrogate)
    v0 = _initial_state(x_seq, state, v_reset)
    s, v_last, v_seq = lif_family(x_seq, v0, k, v_threshold, v_reset, decay_input, detach_reset, sg,
                                  return_v, backend, bool(check_inputs))
    if return_v:
        return s, LIFState(v_last), v_seq
    return s, LIFState(v_last)


def lif(x_seq, state=None, *, tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False,
        surrogate="atan", backend="auto", return_v=False, check_inputs=True):
    """Leaky integrate-and-fire over ``x_seq [T, B, ...]``. ``tau`` (>= 1) may be a tensor broadcastable to
    ``[B, ...]`` (e.g. per channel)."""
    check_number("tau", tau, low=1.0)
    return lif_family_seq(x_seq, state, k=1.0 / tau, v_threshold=v_threshold, v_reset=v_reset,
                          decay_input=decay_input, detach_reset=detach_reset, surrogate=surrogate,
                          backend=backend, return_v=return_v, check_inputs=check_inputs)


def if_(x_seq, state=None, *, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="atan",
        backend="auto", return_v=False, check_inputs=True):
    """Integrate-and-fire (no leak): :math:`h_t = v_{t-1} + x_t`."""
    return lif_family_seq(x_seq, state, k=0.0, v_threshold=v_threshold, v_reset=v_reset, decay_input=False,
                          detach_reset=detach_reset, surrogate=surrogate, backend=backend,
                          return_v=return_v, check_inputs=check_inputs)


def plif(x_seq, w, state=None, *, v_threshold=1.0, v_reset=0.0, decay_input=True, detach_reset=False,
         surrogate="atan", backend="auto", return_v=False, check_inputs=True):
    """Parametric LIF (Fang et al. 2021): learnable ``w`` (scalar or broadcastable tensor), ``1/tau = sigmoid(w)``."""
    if not torch.is_tensor(w) or not w.is_floating_point():
        raise ValueError(f"w: expected a floating-point tensor (1/tau = sigmoid(w)), got {w!r}")
    return lif_family_seq(x_seq, state, k=torch.sigmoid(w).to(x_seq.dtype), v_threshold=v_threshold,
                          v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset,
                          surrogate=surrogate, backend=backend, return_v=return_v, check_inputs=check_inputs)


def _step(seq_fn, x_t, state, **kw):
    check_step(x_t)
    s, st = seq_fn(x_t.unsqueeze(0), state, **kw)
    return s.squeeze(0), st


def lif_step(x_t, state=None, **kw):
    """One LIF step: ``x_t [B, ...]`` -> ``(s_t, LIFState)``; keyword arguments as :func:`lif`."""
    return _step(lif, x_t, state, **kw)


def if_step(x_t, state=None, **kw):
    """One IF step; keyword arguments as :func:`if_`."""
    return _step(if_, x_t, state, **kw)


def plif_step(x_t, w, state=None, **kw):
    """One PLIF step; keyword arguments as :func:`plif`."""
    check_step(x_t)
    s, st = plif(x_t.unsqueeze(0), w, state, **kw)
    return s.squeeze(0), st
