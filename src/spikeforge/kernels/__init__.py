"""Executions of the neuron recurrences: ``reference`` (plain torch, the definition of truth), ``cpu``
(numba, fused forward + hand-written backward), ``triton`` (CUDA). ``dispatch`` picks one."""
