"""The LIF family on one named backend, with the positional signature the kernel tests use:
``fn(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v=False, check=True)`` ->
``(spikes, v_T, v_seq or None)`` (:func:`spikeforge.functional.lif.lif_family` with ``backend`` fixed)."""

from spikeforge.functional.lif import lif_family


def lif_on(backend: str):
    def run(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v=False, check=True):
        return lif_family(x_seq, v0, k, v_th, v_reset, decay_input, detach_reset, surrogate, return_v, backend, check)

    run.__name__ = f"lif_{backend}"
    return run


lif_cpu = lif_on("cpu")
lif_reference = lif_on("reference")
