"""Batching raw event samples for ``torch.utils.data.DataLoader``.

An event set without a frame transform yields ``(events, label)`` with ``events`` a structured numpy array
(:data:`~spikeforge.data.EVENT_DTYPE`) of a different length per recording, which torch's default collate
cannot stack (``can't convert np.ndarray of type numpy.void``). :func:`collate_events` keeps them as a list.
"""

from __future__ import annotations

import numpy as np
import torch


def collate_events(batch):
    """``DataLoader(ds, batch_size=B, collate_fn=collate_events)`` for raw event sets.

    Takes a list of ``(events, label)`` samples and returns ``(events_list, labels)``: the ``B`` structured
    event arrays unchanged, in order (lengths differ), and the labels as an int64 tensor ``[B]``.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> from spikeforge.data import make_events
        >>> samples = [(make_events([1, 2], [3, 4], [10, 20], [0, 1]), 7), (make_events([5], [6], [30], [1]), 2)]
        >>> events, labels = next(iter(DataLoader(samples, batch_size=2, collate_fn=collate_events)))
        >>> [len(e) for e in events], events[1]["x"].tolist(), labels
        ([2, 1], [5], tensor([7, 2]))
    """
    events, labels = [], []
    for i, sample in enumerate(batch):
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise ValueError(f"collate_events: sample {i} is a {type(sample).__name__}; allowed: an (events, label) pair")
        ev, label = sample
        if not isinstance(ev, np.ndarray) or ev.dtype.names is None:
            what = f"{type(ev).__name__} of {ev.dtype}" if isinstance(ev, (np.ndarray, torch.Tensor)) else type(ev).__name__
            raise ValueError(
                f"collate_events: sample {i} holds a {what}; allowed: a structured event array (a dataset without "
                "a frame transform). Frames or tensors batch with the default collate: drop collate_fn")
        events.append(ev)
        labels.append(int(label))
    return events, torch.tensor(labels, dtype=torch.int64)
