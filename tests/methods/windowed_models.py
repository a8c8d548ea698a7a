"""Shared pieces of the tbptt / ottt tests: tiny models, a step context, and a count of the activations autograd
keeps alive (what "memory flat in T" means, without timing anything)."""

import torch
from torch import nn

from spikeforge.layers import TimeFold
from spikeforge.methods import StepContext
from spikeforge.models.base import SpikingModel
from spikeforge.neurons import LIF
from spikeforge.training.losses import compute_loss


class OneLayer(SpikingModel):
    """Input spikes [T, B, n_in] -> Linear -> neuron; the output is the neuron's spikes [T, B, n_out]."""

    channels_last = False

    def __init__(self, n_in=6, n_out=4, T=5, neuron=None, bias=True):
        super().__init__(num_classes=n_out, in_channels=n_in, T=T, static_ndim=2)
        self.fc = TimeFold(nn.Linear(n_in, n_out, bias=bias))
        self.sn = neuron if neuron is not None else LIF(tau=2.0, decay_input=False, v_reset=None,
                                                        detach_reset=True, surrogate="sigmoid")

    def forward_seq(self, x_seq):
        return self.sn(self.fc(x_seq))


class TwoLayer(SpikingModel):
    """Input [T, B, n_in] -> Linear -> LIF -> Linear readout (per-step logits)."""

    channels_last = False

    def __init__(self, n_in=6, hidden=5, n_out=3, T=5, **lif):
        super().__init__(num_classes=n_out, in_channels=n_in, T=T, static_ndim=2)
        self.fc1 = TimeFold(nn.Linear(n_in, hidden))
        self.sn = LIF(**{"tau": 2.0, "decay_input": False, "v_reset": None, "detach_reset": True,
                         "surrogate": "sigmoid", **lif})
        self.fc2 = TimeFold(nn.Linear(hidden, n_out))

    def forward_seq(self, x_seq):
        return self.fc2(self.sn(self.fc1(x_seq)))


def tet64(out, y, lam=0.1):
    """TET (per-step CE + lam * MSE to 1) in the outputs' own dtype (the library's loss computes in float32)."""
    T, B, K = out.shape
    ce = nn.functional.cross_entropy(out.reshape(T * B, K), y.repeat(T))
    return (1 - lam) * ce + lam * nn.functional.mse_loss(out, torch.ones_like(out))


def ctx(loss="tet", T=5, scale=1.0, update=None, lam=0.1):
    def fn(out, y):
        if loss == "tet64":
            return tet64(out, y, lam)
        return compute_loss(loss, out, y, 0.0, lam if loss == "tet" else 0.0)

    return StepContext(epoch=1, step=0, global_step=0, loss_fn=fn, loss_scale=scale, T=T, update=update)


def grads(net):
    g = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    return g


class SavedBytes:
    """Context manager: the peak number of bytes autograd holds for backward (saved tensors alive at once)."""

    def __init__(self):
        self.alive = self.peak = 0

    def __enter__(self):
        counter = self

        class Held:
            def __init__(self, t):
                self.t, self.n = t, t.numel() * t.element_size()
                counter.alive += self.n
                counter.peak = max(counter.peak, counter.alive)

            def __del__(self):
                counter.alive -= self.n

        self._hooks = torch.autograd.graph.saved_tensors_hooks(Held, lambda h: h.t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False


DDP_SCRIPT = r'''
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

RUNS = eval(sys.argv[2])  # [(method, kwargs), ...]


def build():
    from spikeforge.models import create_model

    torch.manual_seed(0)
    return create_model("convnet", T=4, input_size=8, channels=(4,), hidden=6, norm="ws",
                        neuron_kwargs={"backend": "reference"}).double()


def data():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (6,), generator=g)


def run(net, stepped, x, y, scale, method, kwargs):
    from spikeforge.methods import StepContext, create_method
    from spikeforge.training.losses import compute_loss

    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)

    def update():
        opt.step()
        opt.zero_grad(set_to_none=True)

    ctx = StepContext(epoch=1, step=0, global_step=0, loss_fn=lambda o, t: compute_loss("tet", o, t),
                      loss_scale=scale, T=4, update=update)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        create_method(method, kwargs).train_step(stepped, x, y, ctx)
        opt.step()


def worker(rank, world, path):
    dist.init_process_group("gloo", init_method="file://" + path + "/rendezvous", rank=rank, world_size=world)
    torch.set_num_threads(1)
    x, y = data()
    idx = torch.arange(len(y))[rank::world]
    for i, (method, kwargs) in enumerate(RUNS):
        net = build()
        run(net, torch.nn.parallel.DistributedDataParallel(net), x[idx], y[idx], len(idx) * world / len(y), method,
            kwargs)
        if rank == 0:
            torch.save(net.state_dict(), f"{path}/ddp{i}.pt")
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # the results are saved; a worker's interpreter teardown can abort in gloo's threads (SIGABRT)


if __name__ == "__main__":
    path = sys.argv[1]
    mp.spawn(worker, args=(2, path), nprocs=2)
    torch.set_num_threads(1)
    x, y = data()
    for i, (method, kwargs) in enumerate(RUNS):
        net = build()
        run(net, net, x, y, 1.0, method, kwargs)
        got = torch.load(f"{path}/ddp{i}.pt", weights_only=True)
        print("maxdiff", max(float((v - got[k]).abs().max()) for k, v in net.state_dict().items()))
'''


def ddp_vs_one_process(tmp_path, runs) -> list[float]:
    """Two gloo processes (each half of the batch, DDP-wrapped) vs one process on the whole batch: for each
    ``(method, kwargs)`` of ``runs``, the largest difference of any weight after two steps (float64)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_check.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(script), str(tmp_path), repr(runs)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return [float(line.split()[1]) for line in res.stdout.splitlines() if line.startswith("maxdiff")]
