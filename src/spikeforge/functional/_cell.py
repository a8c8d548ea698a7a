"""The shared body of the functional API of cell neurons (validate, default the state, run, wrap the state)."""

from __future__ import annotations

import torch

from ..kernels.cell import Cell
from ..kernels.dispatch import check_backend_name, run_cell
from ._checks import check_bool, check_seq


def cell_seq(cell: Cell, x_seq, state, state_cls, params, *, surrogate, backend, return_v, check_inputs,
             init=None):
    """Shared body of the functional API of cell neurons: validate, default the state, run, wrap the state.

    ``state`` is ``None`` (zeros, or ``init`` values per state slot), a ``state_cls`` or a tuple of tensors.
    Returns ``(out, state_cls)`` or ``(out, state_cls, v_seq)`` with ``return_v``.
    """
    check_seq(x_seq)
    check_bool("return_v", return_v)
    check_bool("check_inputs", check_inputs)
    check_backend_name(backend)
    shape = x_seq.shape[1:]
    if state is None:  # one value broadcast (stride 0): nothing [B, ...]-sized to allocate or copy
        init = init or (0.0,) * cell.n_states
        states = tuple(torch.full((), float(v), dtype=x_seq.dtype, device=x_seq.device).expand(shape) for v in init)
    else:
        if not isinstance(state, tuple) or len(state) != cell.n_states:
            raise ValueError(f"state: expected {state_cls.__name__}({', '.join(cell.states)}), got "
                             f"{type(state).__name__}")
        states = []
        for name, v in zip(cell.states, state):
            if not torch.is_tensor(v):
                raise ValueError(f"state.{name}: expected a tensor, got {type(v).__name__}")
            if v.shape != shape:
                if v.numel() != 1:
                    raise ValueError(f"state.{name}: shape {tuple(v.shape)} does not match x_seq's [B, ...] = "
                                     f"{tuple(shape)}")
                v = v.reshape(()).expand(shape)
            states.append(v.to(x_seq.dtype))
    out, final, v_seq = run_cell(cell, x_seq, tuple(states), params, surrogate, backend, return_v, check_inputs)
    st = state_cls(*final)
    return (out, st, v_seq) if return_v else (out, st)
