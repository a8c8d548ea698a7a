r"""Fused CPU kernels (numba) of the BATS layer: exact spike times and their exact gradients.

The equations, and the plain-torch definition of truth these kernels are tested against, are in
:mod:`spikeforge.functional.bats`.  One dtype (float64: the closed form takes logs and square roots of sums of
exponentials, which float32 would round at the 1e-5 s scale the card's check asks for), one variant.

Layout: a sample's input spikes of every presynaptic neuron, sorted by time (``t_s [B, L]``, padded with +inf,
``n_in [B]`` valid), with their presynaptic index ``src [B, L]`` and the factors ``A = exp(t/tau_s)``,
``E = exp(t/tau)``.  Outputs per (sample, neuron), padded to ``S = max_spikes``: the spike times and, for the
backward, ``z = exp(t/tau)``, the discriminant root ``x`` and the number of causal inputs of each spike.

* ``bats_fwd`` is parallel over (sample, neuron) pairs (``prange``): each walks the sorted inputs once.
* ``bats_bwd_spikes`` (serial: it is linear in the output spikes) turns the errors ``dL/dt_k`` into the errors
  that include the recurrent-reset terms (a spike's reset moves every later spike of its neuron) and multiplies them by the
  implicit-function factors ``f1 = dt/da``, ``f2 = -dt/db``.
* ``bats_bwd_weight`` (parallel over neurons, so that no two threads add to one weight row) and
  ``bats_bwd_input`` (parallel over samples, so that no two threads add to one input spike) walk the inputs
  backwards once with suffix sums over the output spikes that each input spike caused.

Compiled once (on the first call) and cached on disk next to the generated source (see
:mod:`spikeforge.kernels.runtime`).
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_MOD = None

SOURCE = '''\
import math

import numba as nb
import numpy as np
from numba import prange

JIT = dict(nogil=True, cache=CACHE, error_model="numpy")


@nb.njit(parallel=True, **JIT)
def bats_fwd(t_s, A, E, src, n_in, W, c, delta, tau, t_max, out_t, out_z, out_x, out_n, count, dropped):
    B = t_s.shape[0]
    M = W.shape[0]
    S = out_t.shape[2]
    for p in prange(B * M):
        b = p // M
        m = p - b * M
        ca = 0.0
        cb = 0.0
        n = 0
        full = False
        nb_in = n_in[b]
        for i in range(nb_in):
            w = W[m, src[b, i]]
            ca += w * A[b, i]
            cb += w * E[b, i]
            lo = t_s[b, i]
            nxt = t_s[b, i + 1] if i + 1 < nb_in else np.inf
            while True:
                disc = cb * cb - 4.0 * ca * c
                if disc < 0.0:
                    break
                x = math.sqrt(disc)
                den = x + cb
                if den == 0.0:
                    break
                z = 2.0 * ca / den
                if z <= 0.0:
                    break
                t = tau * math.log(z)
                if t <= lo or t > t_max or t > nxt:
                    break
                if n == S:  # one spike more than the buffer holds: counted, never stored
                    dropped[b, m] = 1
                    full = True
                    break
                out_t[b, m, n] = t
                out_z[b, m, n] = z
                out_x[b, m, n] = x
                out_n[b, m, n] = i + 1
                n += 1
                lo = t
                cb -= delta * z
            if full:
                break
        count[b, m] = n


@nb.njit(**JIT)
def bats_bwd_spikes(g, out_z, out_x, count, delta, tau, P, Q):
    B = g.shape[0]
    M = g.shape[1]
    for p in range(B * M):  # O(spikes): serial, which also compiles faster
        b = p // M
        m = p - b * M
        acc = 0.0
        for k in range(count[b, m] - 1, -1, -1):
            z = out_z[b, m, k]
            x = out_x[b, m, k]
            G = g[b, m, k] + z * acc
            acc += G * delta / x
            P[b, m, k] = G * tau / (z * x)
            Q[b, m, k] = G * tau / x


@nb.njit(parallel=True, **JIT)
def bats_bwd_weight(P, Q, out_n, count, A, E, src, dW):
    B = P.shape[0]
    M = P.shape[1]
    for m in prange(M):
        for b in range(B):
            nk = count[b, m]
            if nk == 0:
                continue
            sp = 0.0
            sq = 0.0
            k = nk - 1
            for i in range(out_n[b, m, nk - 1] - 1, -1, -1):
                while k >= 0 and out_n[b, m, k] > i:
                    sp += P[b, m, k]
                    sq += Q[b, m, k]
                    k -= 1
                dW[m, src[b, i]] += A[b, i] * sp - E[b, i] * sq


@nb.njit(parallel=True, **JIT)
def bats_bwd_input(P, Q, out_n, count, A, E, src, W, tau_s, tau, dt):
    B = P.shape[0]
    M = P.shape[1]
    for b in prange(B):
        for m in range(M):
            nk = count[b, m]
            if nk == 0:
                continue
            sp = 0.0
            sq = 0.0
            k = nk - 1
            for i in range(out_n[b, m, nk - 1] - 1, -1, -1):
                while k >= 0 and out_n[b, m, k] > i:
                    sp += P[b, m, k]
                    sq += Q[b, m, k]
                    k -= 1
                dt[b, i] += W[m, src[b, i]] * (A[b, i] * sp / tau_s - E[b, i] * sq / tau)
'''


def kernels():
    """The compiled module (``bats_fwd``, ``bats_bwd_spikes``, ``bats_bwd_weight``, ``bats_bwd_input``)."""
    global _MOD
    if _MOD is None:
        with _lock:
            if _MOD is None:
                from .runtime import load_fixed_source, start_numba
                start_numba()
                _MOD = load_fixed_source("bats", "bats_float64", SOURCE, "spikeforge_bats")
    return _MOD


def sync_threads(work: int) -> None:
    """Use as many numba threads as torch does (one for tiny work), like the other CPU kernels."""
    from .runtime import sync_threads as _sync

    _sync(work)
