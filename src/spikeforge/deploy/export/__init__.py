"""Leaving spikeforge: NIR graphs (:mod:`.nir`, extra ``nir``) and ONNX files (:mod:`.onnx`, extra ``onnx``).

Nothing here is imported by ``import spikeforge``: each exporter imports its optional package on first use.
"""
