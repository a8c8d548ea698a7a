"""Base class of neuron modules: parameters only, never state between calls."""

from __future__ import annotations

import torch
from torch import nn

from ..functional._checks import check_bool, check_number, check_v_reset
from ..kernels.dispatch import check_backend_name, resolve_backend
from ..surrogate import get_surrogate


class BaseNeuron(nn.Module):
    """Common arguments and the ``forward`` / ``step`` protocol.

    Subclasses implement ``_seq(x_seq, state, return_v) -> (spikes, state[, v_seq])``.
    ``forward(x_seq, state=None)`` returns spikes; pass ``state`` (or ``return_state=True``) to also get the
    final state, so a sequence can be continued.  ``step(x_t, state)`` runs one time step.
    """

    def __init__(self, v_threshold=1.0, v_reset: float | None = 0.0, detach_reset=False, surrogate="atan",
                 backend="auto", check_inputs=True):
        super().__init__()
        check_number("v_threshold", v_threshold, low=0.0, low_inclusive=False)
        self.v_threshold = v_threshold
        self.v_reset = check_v_reset(v_reset)
        self.detach_reset = check_bool("detach_reset", detach_reset)
        self.surrogate = get_surrogate(surrogate)
        self.backend = check_backend_name(backend)
        self.check_inputs = check_bool("check_inputs", check_inputs)

    def _seq(self, x_seq, state, return_v):  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must define _seq(x_seq, state, return_v)")

    def forward(self, x_seq: torch.Tensor, state=None, *, return_state: bool | None = None,
                return_v: bool = False):
        out = self._seq(x_seq, state, return_v)
        want_state = (state is not None) if return_state is None else return_state
        if return_v:
            s, st, v_seq = out
            return (s, st, v_seq) if want_state else (s, v_seq)
        s, st = out
        return (s, st) if want_state else s

    def step(self, x_t: torch.Tensor, state=None):
        """One time step: ``x_t [B, ...]`` -> ``(s_t, state)``."""
        if not torch.is_tensor(x_t) or x_t.dim() < 1:
            raise ValueError(f"x_t: expected a tensor [B, ...], got {getattr(x_t, 'shape', type(x_t).__name__)}")
        s, st = self._seq(x_t.unsqueeze(0), state, False)
        return s.squeeze(0), st

    def resolved_backend(self, x: torch.Tensor) -> str:
        """The backend ``self.backend`` resolves to for tensor ``x`` (what "auto" chose)."""
        return resolve_backend(self.backend, x)

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
                f"surrogate={self.surrogate.name}(alpha={self.surrogate.alpha}), backend={self.backend!r}")
