"""Helpers of the conversion tests."""

import torch
import torch.nn.functional as F


def train_ann(model, x, y, epochs=2, lr=0.05, bs=100, seed=0):
    """SGD with momentum 0.9, written out (torch.optim's first use imports torch._dynamo: seconds)."""
    g = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny shapes gain nothing from a second thread; on a loaded machine it costs 100x
    params = [p for p in model.parameters() if p.requires_grad]
    mom = [torch.zeros_like(p) for p in params]
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], bs):
            idx = order[i:i + bs]
            out = model(x[idx])
            out = out.mean(0) if out.dim() == 3 else out
            loss = F.cross_entropy(out, y[idx])
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, m, gr in zip(params, mom, grads):
                    m.mul_(0.9).add_(gr)
                    p.sub_(lr * m)
    torch.set_num_threads(threads)
    return model.eval()
