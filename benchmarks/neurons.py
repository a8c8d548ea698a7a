"""LIF forward + backward on CPU: spikeforge backends vs SpikingJelly 2.0, snnTorch and Norse.

Dynamics: beta 0.5 (tau 2, decay_input=False), threshold 1, hard reset to 0, ATan surrogate (alpha 2); the loss is
``spikes.sum()``.  Every anchor is configured to the same dynamics and its spikes are checked to be identical to
spikeforge's before it is timed (see benchmarks/README.md for how each one was matched).  The floor is one
in-place pass over the input (``x.neg_()``).  A second floor, the *traffic floor*, times the memory traffic that any
forward + backward of this loss must do, with no arithmetic and no overhead: write the spikes from x, read them for
the sum, write dL/dx from x (``s.copy_(x); s.sum(); gx.copy_(x)``).  Where the input fits in the last-level cache the
one-pass floor runs at cache speed while the traffic floor spills to DRAM, so the two differ by more than 3x.
Times are medians of repeated runs after warm-up (numba compilation happens in the warm-up).  Saved bytes/element:
distinct storages the autograd graph keeps for backward.

Run:  python benchmarks/neurons.py            (writes the "neurons" section of docs/benchmarks.md)
      python benchmarks/neurons.py --quick    (smaller inputs, prints only)
"""

from __future__ import annotations

import os

# torch's OpenMP workers spin for milliseconds after every parallel op; numba's kernels run on a second OpenMP
# runtime and wait for them (and so does everything on a shared machine).  Threads that sleep when idle are
# fairer to every column; set OMP_WAIT_POLICY yourself to override (it must be set before torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import weakref  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine_line, median_time, write_section  # noqa: E402

from spikeforge.functional import lif  # noqa: E402
from spikeforge.kernels.dispatch import resolve_backend  # noqa: E402

CONFIGS = [
    ("T8·B32·N4096", 8, (32, 4096)),
    ("T32·B32·N4096", 32, (32, 4096)),
    ("T128·B16·N1024", 128, (16, 1024)),
    ("T4·B32·(64×32×32)", 4, (32, 64, 32, 32)),
]
QUICK = [("T8·B4·N1024", 8, (4, 1024)), ("T32·B2·N512", 32, (2, 512))]
LIF_KW = dict(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="atan")


def make_input(T, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, *shape, generator=g) * 0.5 + 0.5


# --- implementations: each returns fn(x) -> spikes [T, ...] (fresh state every call) -------------------------
def spikeforge_fn(backend, **overrides):
    kw = {**LIF_KW, **overrides}
    return lambda x: lif(x, backend=backend, **kw)[0]


def spikingjelly_fn():
    from spikingjelly.activation_based import functional, neuron, surrogate

    node = neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=1.0, v_reset=0.0,
                          surrogate_function=surrogate.ATan(alpha=2.0), detach_reset=False, step_mode="m")

    def run(x):
        functional.reset_net(node)
        return node(x)

    return run


def snntorch_fn():
    import snntorch as snn
    from snntorch import surrogate

    # reset_delay=False: reset in the step that fired (spikeforge/SpikingJelly order); "zero" = hard reset to 0
    cell = snn.Leaky(beta=0.5, threshold=1.0, spike_grad=surrogate.atan(alpha=2.0), reset_mechanism="zero",
                     reset_delay=False)

    def run(x):
        mem = torch.zeros_like(x[0])
        spikes = []
        for x_t in x.unbind(0):
            spk, mem = cell(x_t, mem)
            spikes.append(spk)
        return torch.stack(spikes)

    return run


def norse_fn():
    from norse.torch import LIF, LIFParameters

    # dt * tau_syn_inv = 1 empties the synaptic current every step, so v_t = v + 0.5 ((0 - v) + x_t): LIF with
    # decay_input=True.  Fed 2x it is beta-0.5 dynamics; spikeforge is timed on the same input and settings
    # (decay_input=True, detached reset, SuperSpike = fast_sigmoid alpha 100) for this column.
    p = LIFParameters(tau_syn_inv=torch.as_tensor(1000.0), tau_mem_inv=torch.as_tensor(500.0),
                      v_leak=torch.as_tensor(0.0), v_th=torch.as_tensor(1.0), v_reset=torch.as_tensor(0.0),
                      method="super", alpha=torch.as_tensor(100.0))
    layer = LIF(p=p, dt=1e-3)
    return lambda x: layer(2.0 * x)[0]


NORSE_KEY = "spikeforge (Norse's setup)"
NORSE_MATCH = dict(decay_input=True, detach_reset=True, surrogate="fast_sigmoid")


def norse_match_fn(backend="auto"):
    kw = {**LIF_KW, **NORSE_MATCH}
    from spikeforge.surrogate import get_surrogate

    kw["surrogate"] = get_surrogate("fast_sigmoid", 100.0)
    return lambda x: lif(2.0 * x, backend=backend, **kw)[0]


ANCHORS = {  # name: (module to look for, factory)
    "SpikingJelly 2.0": ("spikingjelly", spikingjelly_fn),
    "snnTorch": ("snntorch", snntorch_fn),
    "Norse": ("norse", norse_fn),
}


def installed(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


# --- measurements ---------------------------------------------------------------------------------------------
def fwd_bwd(fn, x):
    def run():
        x.grad = None
        fn(x).sum().backward()

    return run


class _Saved:
    def __init__(self, t):
        self.t = t


def saved_bytes_per_element(fn, x) -> float:
    packed = []

    def pack(t):
        h = _Saved(t)
        packed.append(weakref.ref(h))
        return h

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda h: h.t):
        out = fn(x)
    gc.collect()
    storages = {}
    for ref in packed:
        h = ref()
        if h is not None:
            st = h.t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
    del out
    return sum(storages.values()) / x.numel()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, print only (no docs update)")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    configs = QUICK if args.quick else CONFIGS
    auto = resolve_backend("auto", torch.zeros(1, 1))
    impls = {f"spikeforge auto ({auto})": spikeforge_fn("auto"), "spikeforge reference": spikeforge_fn("reference")}
    missing = []
    for name, (mod, factory) in ANCHORS.items():
        if installed(mod):
            impls[name] = factory()
        else:
            missing.append(f"{name} (`{mod}` not installed: skipped)")
    ours = next(iter(impls))
    load0 = os.getloadavg()[0]

    rows, mem_row, notes = [], {}, []
    for cname, T, shape in configs:
        x0 = make_input(T, shape)
        x = x0.clone().requires_grad_()
        with torch.no_grad():
            want = impls[ours](x0)
            want_norse = norse_match_fn()(x0)
        floor_x = x0.clone()
        floor = median_time(lambda: floor_x.neg_(), repeat=args.repeat)
        s_buf, gx_buf = torch.empty_like(x0), torch.empty_like(x0)

        def traffic():
            s_buf.copy_(x0)
            s_buf.sum()
            gx_buf.copy_(x0)

        traffic_floor = median_time(traffic, repeat=args.repeat)
        times = {}
        for name, fn in impls.items():
            with torch.no_grad():
                got = fn(x0)
            ref = want_norse if name == "Norse" else want
            if not torch.equal(got.to(ref.dtype), ref):
                n = int((got.to(ref.dtype) != ref).sum())
                times[name] = None
                notes.append(f"{name} at {cname}: {n} of {ref.numel()} spikes differ from spikeforge; not timed")
                continue
            times[name] = median_time(fwd_bwd(fn, x), repeat=args.repeat)
            if cname == configs[0][0]:
                mem_row[name] = saved_bytes_per_element(fn, x)
        if "Norse" in impls:
            times[NORSE_KEY] = median_time(fwd_bwd(norse_match_fn(), x), repeat=args.repeat)
        rows.append((cname, x0.numel(), floor, traffic_floor, times))
        print(cname, {k: (None if v is None else round(v * 1e3, 3)) for k, v in times.items()},
              "floor", round(floor * 1e3, 3), "traffic floor", round(traffic_floor * 1e3, 3), flush=True)

    names = list(impls)
    head = "| config | elements | floor (1 pass) | traffic floor | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for cname, numel, floor, traffic_floor, times in rows:
        base = times[ours]
        cells = []
        for name in names:
            t = times.get(name)
            if t is None:
                cells.append("spikes differ")
            elif name == ours:
                cells.append(f"**{t * 1e3:.2f} ms** ({t / floor:.1f} passes; {t / traffic_floor:.1f}x traffic floor)")
            else:
                ref_t = times[NORSE_KEY] if name == "Norse" else base
                cells.append(f"{t * 1e3:.2f} ms (**{t / ref_t:.1f}x**)")
        lines.append(f"| {cname} | {numel:,} | {floor * 1e3:.3f} ms | {traffic_floor * 1e3:.3f} ms "
                     f"({traffic_floor / floor:.1f} passes) | " + " | ".join(cells) + " |")
    lines.append("| saved for backward, B/element (" + configs[0][0] + ") | | | | "
                 + " | ".join(f"{mem_row[n]:.2f}" if n in mem_row else "–" for n in names) + " |")
    body = [
        "## neurons: LIF forward + backward (CPU)",
        "",
        f"`python benchmarks/neurons.py{' --quick' if args.quick else ''}` · {machine_line()} · float32 · "
        f"median of {args.repeat} runs after 2 warm-up runs · OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} · "
        f"load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end (other jobs share the cores when "
        "it exceeds the core count)",
        "",
        "beta 0.5 (tau 2, decay_input False), threshold 1, hard reset 0, ATan alpha 2, loss = spikes.sum(). "
        f"Cells: median time of forward + backward and, for {ours}, the number of in-place memory passes over "
        "the input it costs and its ratio to the traffic floor; for the others, how many times slower than it they "
        "are. The traffic floor is the memory traffic any forward + backward of this loss needs, timed with plain "
        "copies (`s.copy_(x); s.sum(); gx.copy_(x)`: no arithmetic, no call overhead), and shown in passes too. "
        "Spikes of every column were checked identical to spikeforge's before timing.",
        "",
        *lines,
    ]
    if "Norse" in impls:
        body += ["", "Norse's LIF integrates a synaptic current; it is set to the same beta-0.5 LIF (see "
                 "benchmarks/README.md), which takes decay_input=True on input 2x, a detached reset and "
                 "SuperSpike, so its ratio is against spikeforge timed on that same setup (spikes identical): "
                 + ", ".join(f"{c}: {t[NORSE_KEY] * 1e3:.2f} ms" for c, _, _, _, t in rows) + "."]
    if missing:
        body += ["", "Not installed: " + "; ".join(missing) + "."]
    if notes:
        body += ["", *[f"- {n}" for n in notes]]
    text = "\n".join(body)
    print(text)
    if not args.quick:
        write_section("neurons", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
