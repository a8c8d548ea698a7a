"""Deployment realism: weight quantisation, weight noise and neuron mismatch, memristive crossbars.

``quantize_(model, QuantConfig(...))`` and ``weight_noise_(model, sigma_rel)`` act in place through one weight
parametrisation (:class:`~spikeforge.deploy.quant.DeployWeight`); ``dequantize_`` / ``clear_noise_`` undo them.
"""

from .neuron_quant import dequantize_neurons_, quantize_neurons_
from .noise import clear_noise_, neuron_mismatch_, weight_noise_
from .quant import QuantConfig, dequantize_, dequantize_int, export_int, fake_quant, quantize_, storage_bits

__all__ = ["QuantConfig", "fake_quant", "quantize_", "dequantize_", "export_int", "dequantize_int", "storage_bits",
           "weight_noise_", "clear_noise_", "neuron_mismatch_", "quantize_neurons_", "dequantize_neurons_"]
