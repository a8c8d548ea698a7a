"""Optional TensorBoard sink (``run.tensorboard=true``, extra ``tensorboard``): the scalars of ``metrics.jsonl``.

Per optimiser step: ``step/loss``, ``step/acc`` (the running means of the epoch so far, as the progress bar shows
them) and ``step/lr``, at ``global_step``.  Per epoch: every number of the ``metrics.jsonl`` record as
``epoch/<key>``, ``firing_rate/<layer>`` for each monitored layer and ``acc_per_step/t<i>``, at the epoch
number.  Event files go to ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs``).

Example:
    >>> import tempfile
    >>> from spikeforge.training.tensorboard import TensorBoardSink
    >>> with tempfile.TemporaryDirectory() as d:
    ...     sink = TensorBoardSink(d)
    ...     sink.step(1, loss=2.3, acc=0.1, lr=0.01)
    ...     sink.epoch({"epoch": 1, "test_acc": 0.5, "firing_rates": {"features.1": 0.1}, "acc_per_step": [0.4]})
    ...     sink.close()
"""

from __future__ import annotations

import math
from pathlib import Path


def _writer_cls():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("run.tensorboard: true needs the tensorboard package (pip install "
                         "'spikeforge[tensorboard]'), or set run.tensorboard=false") from None
    return SummaryWriter


class TensorBoardSink:
    """Writes the run's scalars to ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir):
        self.writer = _writer_cls()(log_dir=str(Path(run_dir) / "tensorboard"))

    def step(self, global_step: int, **scalars) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(f"step/{k}", float(v), global_step)

    def epoch(self, record: dict) -> None:
        e = int(record["epoch"])
        for k, v in record.items():
            if k == "epoch":
                continue
            if isinstance(v, bool):
                v = float(v)
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(f"epoch/{k}", float(v), e)
            elif k == "firing_rates" and isinstance(v, dict):
                for layer, r in v.items():
                    self.writer.add_scalar(f"firing_rate/{layer}", float(r), e)
            elif k == "acc_per_step" and isinstance(v, list):
                for t, a in enumerate(v, 1):
                    self.writer.add_scalar(f"acc_per_step/t{t}", float(a), e)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
