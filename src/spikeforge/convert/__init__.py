"""ANN -> SNN conversion (issue 16): ``convert(ann, ConversionConfig, calibration_data) -> snn``, the recipes
(``RECIPES``: one file each), accuracy-vs-T simulation and per-layer diagnostics.  See docs/convert.md."""

from .fold import fold_batchnorm
from .config import ConversionConfig
from .core import ConvertedSNN, ThresholdIF, build_snn, calibrate, convert, prepare_ann, site_names
from .simulate import accuracy_vs_T, format_diagnostics, layer_diagnostics, run_sequence

__all__ = ["fold_batchnorm", "ConversionConfig", "convert", "prepare_ann", "calibrate", "build_snn",
           "ThresholdIF", "ConvertedSNN", "site_names", "accuracy_vs_T", "run_sequence", "layer_diagnostics",
           "format_diagnostics"]

# recipes: each file registers itself
from . import cat_ttfs, hybrid, noise_single_step, normalisation, privatesnn, qcfs, spicalib, tcl  # noqa: E402,F401,I001
from .registry import RECIPES, convert_with  # noqa: E402

__all__ += ["RECIPES", "convert_with"]
