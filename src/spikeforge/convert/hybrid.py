r"""``hybrid``: convert, then fine-tune the SNN for a few epochs with surrogate-gradient BPTT at a small T (Rathi et
al. 2020's hybrid training, with spikeforge's IF surrogate): the converted weights are a good start, and BPTT at
the deployment T repairs what the rate approximation loses there.

Loss: cross-entropy of the time-averaged logits; Adam; thresholds stay as converted (buffers); only weights and
biases train.  Needs labelled data ``(x, y)`` (the ANN's training set).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.convert.registry import convert_with
    >>> ann = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> x, y = torch.rand(64, 8), torch.randint(0, 3, (64,))
    >>> snn = convert_with("hybrid", ann, (x, y), T=4, epochs=1)
    >>> snn.training
    False
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import RECIPES, convert_with


@RECIPES.register("hybrid", labelled=True,
                  help="convert (channel-wise percentile, theta/2) then fine-tune a few epochs with BPTT at small T "
                       "(Rathi et al. 2020)")
def hybrid(ann, calibration_data=None, *, base: str = "channelwise", epochs: int = 2, lr: float = 1e-4,
           batch_size: int = 64, seed: int = 0, **options):
    if not (isinstance(calibration_data, (tuple, list)) and len(calibration_data) == 2
            and all(torch.is_tensor(t) for t in calibration_data)):
        raise ValueError("calibration_data: hybrid fine-tunes on labelled data; give a pair (x [N, ...], y [N]) "
                         f"of tensors, got {type(calibration_data).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs: {epochs!r}; allowed: an integer >= 0")
    if base in ("hybrid", "noise_single_step"):
        raise ValueError(f"base: {base!r}; allowed: a conversion recipe such as channelwise, percentile, tcl, qcfs")
    options.setdefault("v_init", 0.5) if base in ("channelwise", "percentile", "maxnorm") else None
    x, y = calibration_data
    snn = convert_with(base, ann, x, **options)
    params = [p for p in snn.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    snn.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(snn(x[idx]).mean(0), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return snn.eval()


__all__ = ["hybrid"]
