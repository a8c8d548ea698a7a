"""ANN -> SNN conversion: ``convert(ann, ConversionConfig, calibration_data)`` and its recipes (issue 16)."""

from .fold import fold_batchnorm

__all__ = ["fold_batchnorm"]
