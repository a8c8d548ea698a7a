"""Training: the loop (:func:`train`), losses, atomic checkpoints, run folders, plots, reports and DDP.

See ``docs/training.md``; the command line is ``spikeforge train | eval | report``.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .losses import compute_loss, ce_mean_loss, mse_rate_loss, tet_loss
from .runs import RunDir
from ..models.build import build_model
from .trainer import TrainingDivergedError, evaluate, lr_at, train

__all__ = ["train", "evaluate", "build_model", "lr_at", "TrainingDivergedError", "compute_loss", "ce_mean_loss",
           "tet_loss", "mse_rate_loss", "save_checkpoint", "load_checkpoint", "RunDir"]
