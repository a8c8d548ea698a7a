"""Training methods side by side -> the ``methods`` section of docs/benchmarks.md.

Every registered method (``spikeforge methods``) trains the same Fashion-MNIST conv net on the same budget
(a training subset, a number of epochs), each run in a fresh process so that its peak memory is its own.
A method's row uses ``configs/methods/<name>.yaml`` when it exists (a method may need another neuron,
normalisation or T), else ``configs/fashion_mnist.yaml``; next to every method whose config differs from
the BPTT baseline's, BPTT runs on that same config, so each ratio compares like with like.

Two tables:

* ``accuracy and cost``: test accuracy, T, training seconds per epoch, samples/s, peak RSS and its rise
  over the process's RSS after loading the data, spikes per sample, and the ratios of seconds and memory
  to BPTT on the same config (measured in the same invocation, runs one after the other).
* ``memory vs T``: peak RSS rise for a few training steps at T = 4, 8, 16, 32 per method (the claim of
  online methods: flat in T while BPTT grows).
* ``memory vs window`` (``--table window``): the same for ``tbptt`` at one T (default 32) and windows K = 1 .. T
  (K = T is BPTT).

``--device cuda`` (on a machine with a GPU) trains there and adds ``torch.cuda.max_memory_allocated`` (the loop's
``peak_memory_mb``) next to the RSS columns; the memory tables then report it instead of the RSS rise.

    python benchmarks/methods.py --data-dir ../shared/data                       # both tables
    python benchmarks/methods.py --data-dir ../shared/data --table memory --methods bptt,ottt
    python benchmarks/methods.py --data-dir ../shared/data --table window --window-T 32 --steps 3

``--methods`` re-measures only the rows named (plus BPTT on each config they use) and keeps the other rows
of the accuracy table when the budget is the same; every row is dated, and its ratios are to the BPTT run of
its own invocation.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import machine_line, read_section, write_section  # noqa: E402

BASE = ROOT / "configs" / "fashion_mnist.yaml"


def method_config(name: str) -> Path:
    own = ROOT / "configs" / "methods" / f"{name}.yaml"
    return own if own.is_file() else BASE


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(config: str, overrides: list[str], data_dir: str | None) -> dict:
    """Child process: load the data once (the baseline RSS), then train; print one JSON line."""
    from spikeforge.config import load_config
    from spikeforge.training import train
    from spikeforge.training.data import load_data

    cfg = load_config(config, overrides)
    arrays = load_data(cfg.data, data_dir)
    del arrays
    with tempfile.TemporaryDirectory() as tmp:  # compile the kernels on a 2-sample batch: not counted
        train(cfg.override(["data.batch_size=2", "data.train_subset=2", "data.test_subset=2",
                            "data.eval_batch_size=2", "run.epochs=1"]), Path(tmp) / "warm", data_dir=data_dir,
              verbose=False)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = train(cfg, Path(tmp) / "run", data_dir=data_dir, verbose=False)
    wall = time.perf_counter() - t0
    fin = res["final"]
    return {"test_acc": fin["test_acc"], "T": fin["T"], "train_seconds": fin["train_seconds"],
            "samples_per_s": fin["samples_per_s"], "peak_rss_mb": _rss_mb(), "rss_rise_mb": _rss_mb() - rss0,
            "spikes_per_sample": fin["spikes_per_sample"], "wall_s": wall, "loop_peak_mb": fin["peak_memory_mb"],
            "finalized_acc": (res.get("finalized") or {}).get("test_acc"),
            "finalized_T": len((res.get("finalized") or {}).get("acc_per_step", [])) or None}


def spawn(config: Path, overrides: list[str], data_dir: str | None) -> dict:
    cmd = [sys.executable, __file__, "--child", str(config), "--data-dir", data_dir or ""]
    for o in overrides:
        cmd += ["--set", o]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def baseline_overrides(config: Path) -> list[str]:
    """BPTT on a method's config: no method options; a single-step method's deployed T as BPTT's T."""
    import yaml

    method = (yaml.safe_load(config.read_text()) or {}).get("method") or {}
    out = ["method.name=bptt", "method.kwargs={}"]
    eval_T = (method.get("kwargs") or {}).get("eval_T")
    if eval_T is None and method.get("name") == "noise_single_step":
        from spikeforge.methods import create_method

        eval_T = create_method("noise_single_step").config.eval_T
    if eval_T is not None:
        out.append(f"model.T={eval_T}")
    return out


ACC_HEADER = ("| method | config | test acc | T | s / epoch | samples/s | peak RSS MB | RSS rise MB | "
              "spikes/sample | time vs bptt | memory rise vs bptt | deployed form | measured (UTC) |")
ACC_HEADER_CUDA = ACC_HEADER.replace("| spikes/sample |", "| CUDA max alloc MB | spikes/sample |").replace(
    "| memory rise vs bptt |", "| memory rise vs bptt | CUDA memory vs bptt |")


def _on_cuda(args) -> bool:
    return args.device.startswith("cuda")


def _memory(r: dict, args) -> float:
    """What the memory tables compare: CUDA max allocated on a GPU, else the peak RSS rise."""
    return r["loop_peak_mb"] if _on_cuda(args) else r["rss_rise_mb"]


def _memory_what(args) -> str:
    return "CUDA max allocated (MB)" if _on_cuda(args) else "Peak RSS rise (MB)"


def _budget_title(args) -> str:
    return (f"### Accuracy and cost (train subset {args.train_subset}, test subset {args.test_subset}, "
            f"{args.epochs} epoch(s), every run in its own process, one after the other"
            f"{', on ' + args.device if _on_cuda(args) else ''})")


def kept_rows(section: str | None, title: str, replaced: set[str], header: str = ACC_HEADER) -> dict[str, str]:
    """Rows of an earlier accuracy table with the same budget, for methods not re-measured now."""
    if not section or title not in section or header not in section:
        return {}
    from spikeforge.methods import METHODS

    rows = {}
    for line in section.split(header, 1)[1].splitlines()[2:]:
        if not line.startswith("| "):
            break
        name = line.split("|")[1].strip()
        key = f"{name}|{line.split('|')[2].strip()}"
        if name not in replaced and name in METHODS:
            rows[key] = line
    return rows


def accuracy_table(methods, args, previous: str | None = None) -> str:
    budget = [f"data.train_subset={args.train_subset}", f"data.test_subset={args.test_subset}",
              "data.eval_batch_size=32", f"run.epochs={args.epochs}", "run.plots=false", "run.progress=false",
              f"run.device={args.device}"]
    rows, baselines = [], {}
    for name in methods:
        config = method_config(name)
        if config not in baselines:
            baselines[config] = spawn(config, budget + baseline_overrides(config), args.data_dir)
            print(f"bptt on {config.name}: {baselines[config]}", file=sys.stderr)
        r = baselines[config] if name == "bptt" else spawn(config, budget + [f"method.name={name}"], args.data_dir)
        print(f"{name}: {r}", file=sys.stderr)
        rows.append((name, config, r, baselines[config]))
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    title = _budget_title(args)
    cuda = _on_cuda(args)
    header = ACC_HEADER_CUDA if cuda else ACC_HEADER
    table = kept_rows(previous, title, {name for name, *_ in rows} | {"bptt"}, header)
    for name, config, r, b in rows:
        dep = (f"{100 * r['finalized_acc']:.2f}% at T={r['finalized_T']}" if r.get("finalized_acc") is not None
               else "")
        gpu = f"{r['loop_peak_mb']:,.0f} | " if cuda else ""
        gpu_ratio = f"{r['loop_peak_mb'] / max(b['loop_peak_mb'], 1e-9):.2f}x | " if cuda else ""
        table[f"{name}|{config.relative_to(ROOT)}"] = (
            f"| {name} | {config.relative_to(ROOT)} | {100 * r['test_acc']:.2f}% | {r['T']} | "
            f"{r['train_seconds'] / args.epochs:.1f} | {r['samples_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} | "
            f"{r['rss_rise_mb']:,.0f} | {gpu}{r['spikes_per_sample']:,.0f} | "
            f"{r['train_seconds'] / b['train_seconds']:.2f}x | "
            f"{r['rss_rise_mb'] / max(b['rss_rise_mb'], 1e-9):.2f}x | {gpu_ratio}{dep} | {stamp} |")
    order = sorted(table, key=lambda k: (k.split("|")[0] != "bptt", k))
    rule = "|---|---|" + "---:|" * (header.count("|") - 5) + "---|---|"
    lines = [header, rule] + [table[k] for k in order]
    return (title + "\n\n" + "\n".join(lines) + "\n\nRatios compare each method with BPTT on the same config file "
            "(a single-step method's BPTT runs at the method's deployed T), measured in the same invocation as the "
            "row (same `measured` time; rows re-measured with `--methods` keep the others). Evaluation runs in "
            "batches of 32 so that the RSS rise is the training's. RSS rise: peak RSS during training minus the "
            "RSS after loading the data once and training one 2-sample step (which compiles the kernels).")


def memory_table(methods, args) -> str:
    Ts = [int(t) for t in args.memory_T.split(",")]
    budget = ["data.train_subset=1024", "data.test_subset=64", "data.eval_batch_size=4", "run.epochs=1", f"run.max_steps_per_epoch={args.steps}",
              "run.plots=false", "run.progress=false", f"run.device={args.device}", "run.checkpoint_every_steps=0"]
    lines = ["| method | config | " + " | ".join(f"T={t}" for t in Ts) + f" | T={Ts[-1]} / T={Ts[0]} |",
             "|---|---|" + "---:|" * (len(Ts) + 1)]
    for name in methods:
        config = method_config(name)
        rises = []
        for T in Ts:
            extra = [f"model.T={T}", f"method.name={name}"]
            try:
                r = spawn(config, budget + extra, args.data_dir)
                rises.append(_memory(r, args))
            except RuntimeError as e:  # e.g. a single-step method at T>1: say so in the table
                print(f"{name} T={T}: {str(e)[-300:]}", file=sys.stderr)
                rises.append(None)
            print(f"{name} T={T}: {rises[-1]}", file=sys.stderr)
        cells = [f"{x:,.0f}" if x is not None else "n/a" for x in rises]
        ratio = f"{rises[-1] / rises[0]:.2f}x" if rises[0] and rises[-1] is not None else "n/a"
        lines.append(f"| {name} | {config.relative_to(ROOT)} | " + " | ".join(cells) + f" | {ratio} |")
    return (f"### {_memory_what(args)} vs T ({args.steps} training steps of batch 128, each in its own process)\n\n"
            + "\n".join(lines) + "\n\nn/a: the method does not train at that T (e.g. a single-step method). The "
            "test set (64 samples) is evaluated in batches of 4, so that evaluation at T=32 stays below a training "
            "step's memory.")


def window_table(args) -> str:
    """``tbptt`` at one T with windows K = 1 .. T, each in a fresh process (K = T is BPTT)."""
    T = args.window_T
    Ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64) if k < T} | {T})
    config = method_config("tbptt")
    budget = ["data.train_subset=1024", "data.test_subset=64", "data.eval_batch_size=4", "run.epochs=1",
              f"run.max_steps_per_epoch={args.steps}", "run.plots=false", "run.progress=false",
              f"run.device={args.device}", "run.checkpoint_every_steps=0", f"model.T={T}", "method.name=tbptt"]
    res = {}
    for K in Ks:
        res[K] = spawn(config, budget + [f"method.kwargs.window={K}"], args.data_dir)
        print(f"tbptt T={T} K={K}: {res[K]}", file=sys.stderr)
    full = _memory(res[T], args)
    lines = [f"| window K | {_memory_what(args)} | vs K = T (BPTT) |", "|---:|---:|---:|"]
    for K in Ks:
        m = _memory(res[K], args)
        lines.append(f"| {K}{' (= bptt)' if K == T else ''} | {m:,.0f} | {m / max(full, 1e-9):.2f}x |")
    return (f"### tbptt: {_memory_what(args)} vs window K at T={T} ({args.steps} training steps of batch 128, "
            f"{config.relative_to(ROOT)}, each in its own process)\n\n" + "\n".join(lines) + "\n\nMemory only "
            "(no timing: the runs share the machine); K = T is one window, BPTT exactly.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    ap.add_argument("--table", choices=("all", "accuracy", "memory", "window"), default="all")
    ap.add_argument("--train-subset", type=int, default=6000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--memory-T", default="4,8,16,32")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--window-T", type=int, default=32, help="T of the tbptt memory-vs-window table")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a machine with a GPU")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.overrides, args.data_dir or None)))
        return
    from spikeforge.methods import METHODS

    methods = args.methods.split(",") if args.methods else ["bptt"] + [m for m in METHODS.list() if m != "bptt"]
    cmd = "python benchmarks/methods.py --data-dir ../shared/data " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--data-dir") and a != args.data_dir)
    head = f"Command: `{cmd.strip()}` (with `--methods`: re-measures those rows only) · {machine_line()} · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
    sections = []  # each table is its own section, so one can be re-run alone
    if args.table in ("all", "accuracy"):
        previous = read_section("methods") if args.methods else None
        sections.append(("methods", "## methods: every training method side by side\n\n" + head
                         + accuracy_table(methods, args, previous)))
    if args.table in ("all", "memory"):
        sections.append(("methods_memory", head + memory_table(methods, args)))
    if args.table in ("all", "window"):
        sections.append(("methods_window", head + window_table(args)))
    for name, body in sections:
        if not args.no_write:
            write_section(name, body)
        print(body)


if __name__ == "__main__":
    main()
