"""The training loop: BPTT through T steps with surrogate gradients, one readable function.

Per step: take the global batch (order fixed by ``(seed, epoch)``), augment it (generator seeded by
``(seed, epoch, step)``), keep this process's shard, run the model to per-step outputs ``[T, B, K]``
(bfloat16 autocast when ``run.amp=bf16``), compute the loss (:mod:`~spikeforge.training.losses`), stop
on a non-finite loss or gradient norm, clip, step the optimiser at the scheduled learning rate. Every
``run.checkpoint_every_steps`` steps and at the end of every epoch, rank 0 writes ``last`` atomically with
the model, optimiser and RNG state plus the epoch's running sums, so ``--resume`` after a kill continues
from that step and reproduces the uninterrupted run. Per epoch it evaluates the test set (accuracy at
every t <= T, firing rate per layer, spikes per sample) and appends one record to ``metrics.jsonl``.

Example:
    >>> import tempfile
    >>> from spikeforge.config import TrainConfig
    >>> from spikeforge.training import train
    >>> cfg = TrainConfig().override(["run.epochs=1", "data.train_subset=128", "data.test_subset=64",
    ...                               "run.progress=false", "run.plots=false", "model.T=2"])
    >>> result = train(cfg, run_dir=tempfile.mkdtemp() + "/run", verbose=False)
    >>> sorted(result["final"])[:4]
    ['acc_per_step', 'data_fraction', 'epoch', 'epoch_seconds']
"""

from __future__ import annotations

import contextlib
import math
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig
from . import distributed as D
from .checkpoint import checkpoint_exists, load_checkpoint, restore_rng_state, save_checkpoint
from .data import Arrays, augment_batch, load_data, to_model_input
from .losses import compute_loss
from .runs import RunDir, code_version, default_run_name


class TrainingDivergedError(RuntimeError):
    """The loss (or gradient norm) became NaN or infinite; the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------------- building
def build_model(cfg: TrainConfig, arrays: Arrays) -> torch.nn.Module:
    """The registered model ``cfg.model.name`` sized for the data in ``arrays``."""
    from ..models import MODELS, create_model

    if arrays.sequence and cfg.model.T != arrays.x_train.shape[1]:
        raise ValueError(f"model.T: {cfg.model.T} but the data has {arrays.x_train.shape[1]} frames per sample "
                         f"(data.frames); set model.T={arrays.x_train.shape[1]}")
    params = MODELS.describe(cfg.model.name)["params"]
    kw = dict(cfg.model.kwargs)
    if "input_size" in params and "input_size" not in kw:
        kw["input_size"] = arrays.input_size
    if cfg.model.encoder != "direct":
        if "encoder" not in params:
            raise ValueError(f"model.encoder: model {cfg.model.name!r} takes no encoder option")
        kw["encoder"] = cfg.model.encoder
    return create_model(cfg.model.name, num_classes=arrays.num_classes, in_channels=arrays.in_channels,
                        neuron=cfg.model.neuron, neuron_kwargs=dict(cfg.model.neuron_kwargs) or None,
                        T=cfg.model.T, **kw)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step``: linear warm-up, then constant / cosine / step decay."""
    s, base = cfg.schedule, cfg.optim.lr
    total = steps_per_epoch * cfg.run.epochs
    warm = s.warmup_epochs * steps_per_epoch
    if step < warm:
        return base * (step + 1) / warm
    if s.name == "constant":
        return base
    if s.name == "step":
        return base * s.gamma ** ((step // steps_per_epoch) // s.step_epochs)
    progress = min(1.0, (step - warm) / max(1.0, total - warm))
    return base * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def autocast_context(cfg: TrainConfig, device: torch.device):
    """bfloat16 autocast when ``run.amp=bf16`` (error if the device cannot), else a no-op."""
    if cfg.run.amp == "off":
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"run.amp: 'bf16' but {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                         "use run.amp=off")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic and torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated since the last reset; CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _unwrap(model):
    return model.module if hasattr(model, "module") and isinstance(model, torch.nn.parallel.DistributedDataParallel) \
        else model


# ------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, sequence: bool,
             ctx: D.DistContext | None = None, device: torch.device | None = None) -> dict:
    """Test metrics: accuracy (of the time-averaged output) and at every t <= T, loss, firing rates.

    Under DDP each process evaluates a strided shard and the sums are all-reduced.
    """
    from ..analysis import FiringRateMonitor
    from ..neurons.base import BaseNeuron

    ctx = ctx or D.DistContext()
    device = device or ctx.device
    model = _unwrap(model)
    was_training = model.training
    model.eval()
    has_neurons = any(isinstance(m, BaseNeuron) for m in model.modules())
    monitor = FiringRateMonitor(model) if has_neurons else None
    idx_all = D.shard(torch.arange(len(y)), ctx.rank, ctx.world_size)
    correct_t = loss_sum = n = None
    try:
        for idx in idx_all.split(cfg.data.eval_batch_size):
            xb = to_model_input(x[idx].to(device, non_blocking=True), sequence)
            yb = y[idx].to(device)
            with autocast_context(cfg, device):
                out = model(xb)
            out = out.float()
            if correct_t is None:
                T = out.shape[0]
                correct_t = torch.zeros(T, dtype=torch.float64, device=device)
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                n = torch.zeros((), dtype=torch.float64, device=device)
            steps = torch.arange(1, out.shape[0] + 1, device=device, dtype=out.dtype).view(-1, 1, 1)
            pred_t = (out.cumsum(0) / steps).argmax(-1)  # [T, B]: prediction from steps 1..t
            correct_t += (pred_t == yb.unsqueeze(0)).sum(1).double()
            loss_sum += compute_loss("ce", out, yb).double() * len(yb)
            n += len(yb)
        if correct_t is None:  # this shard was empty
            T = cfg.model.T
            correct_t = torch.zeros(T, dtype=torch.float64, device=device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            n = torch.zeros((), dtype=torch.float64, device=device)
        stats = torch.cat([correct_t, loss_sum.view(1), n.view(1)])
        D.all_reduce_sum(stats, ctx)
        T = correct_t.shape[0]
        correct_t, loss_sum, n = stats[:T], stats[T], stats[T + 1]
        rates, spikes = {}, 0.0
        if monitor is not None and monitor.counts:
            names = sorted(monitor.counts)
            packed = torch.cat([torch.cat([monitor.counts[k], torch.tensor([float(monitor.samples[k])],
                                                                            dtype=torch.float64)])
                                for k in names]).to(device)
            D.all_reduce_sum(packed, ctx)
            packed = packed.cpu().view(len(names), -1)
            for i, k in enumerate(names):
                monitor.counts[k] = packed[i, :-1].clone()
                monitor.samples[k] = int(packed[i, -1])
            rates = monitor.mean_rates()
            spikes = monitor.spikes_per_sample()
    finally:
        if monitor is not None:
            monitor.close()
        model.train(was_training)
    acc_t = (correct_t / n).tolist()
    return {"test_acc": acc_t[-1], "test_loss": float(loss_sum / n), "acc_per_step": acc_t,
            "firing_rates": rates, "spikes_per_sample": spikes, "test_samples": int(n)}


# ------------------------------------------------------------------------------------------- training
def _progress_bar(total, initial, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                mininterval=0.5, file=sys.stderr)


def _prepare_run(cfg, run_dir, resume, force, ctx) -> tuple[RunDir, TrainConfig, dict | None]:
    """Create (or reopen, on resume) the run folder on rank 0; every process learns its path."""
    ckpt = None
    if resume:
        if run_dir is None:
            raise ValueError("resume: give the run folder to continue (spikeforge train --resume RUN_DIR)")
        run = RunDir.open(run_dir)
        cfg = run.load_config()
        if checkpoint_exists(run.last):
            ckpt = load_checkpoint(run.last)
        return run, cfg, ckpt
    path = None
    if ctx.is_main:
        path = Path(run_dir) if run_dir is not None else \
            Path(cfg.run.out_dir) / (cfg.run.name or default_run_name(cfg.data.name, cfg.model.name))
        run = RunDir.create(path, force=force)
        cfg.to_yaml(run.config_path)
        path = str(path)
    path = D.broadcast_object(path, ctx)
    return RunDir(path), cfg, None


def train(cfg: TrainConfig, run_dir=None, *, resume: bool = False, force: bool = False, data_dir=None,
          model: torch.nn.Module | None = None, verbose: bool = True) -> dict:
    """Train ``cfg`` into a run folder; returns ``{"run_dir", "final", "best_acc", "best_epoch", "seconds"}``.

    ``resume=True`` continues ``run_dir`` from its ``last`` checkpoint with the config stored there.
    ``model`` replaces the registered model (e.g. a baseline built by hand); it must return ``[T, B, K]``.
    Raises :class:`TrainingDivergedError` on a non-finite loss, after keeping the last good checkpoint.
    """
    ctx = D.init_distributed(cfg.run.device)
    try:
        return _train(cfg, run_dir, resume, force, data_dir, model, verbose, ctx)
    finally:
        D.shutdown(ctx)


def _train(cfg, run_dir, resume, force, data_dir, model, verbose, ctx):
    t_start = time.perf_counter()
    run, cfg, ckpt = _prepare_run(cfg, run_dir, resume, force, ctx)
    if ctx.world_size == 1:  # the config decides the device; torchrun's env decides under DDP
        ctx = D.DistContext(device=D.resolve_device(cfg.run.device))
    device = ctx.device
    main = ctx.is_main
    log = print if (verbose and main) else (lambda *a, **k: None)
    seed_everything(cfg.run.seed, cfg.run.deterministic)

    arrays = load_data(cfg.data, data_dir)
    if model is None:
        model = build_model(cfg, arrays)
    model = model.to(device)
    optimizer = build_optimizer(cfg, model)
    global_bs = cfg.data.batch_size
    if global_bs < ctx.world_size:
        raise ValueError(f"data.batch_size: {global_bs} is smaller than the number of processes "
                         f"({ctx.world_size}); it is the global batch, split across processes")

    n_train = len(arrays.y_train)
    steps_per_epoch = len(D.batches(n_train, global_bs, 0, 0, world_size=ctx.world_size))
    if cfg.run.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.run.max_steps_per_epoch)

    # --- state that a checkpoint restores
    start_epoch, start_step, global_step = 1, 0, 0
    best_acc, best_epoch = -1.0, 0
    partial = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0, "data_seconds": 0.0}
    if ckpt is not None:
        meta = ckpt["meta"]
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, start_step, global_step = meta["epoch"] + 1, meta["step_in_epoch"], meta["global_step"]
        best_acc, best_epoch = meta["best_acc"], meta["best_epoch"]
        partial = dict(meta["partial"])
        restore_rng_state(meta["rng"], ckpt["tensors"])
        if main:
            run.truncate_metrics(meta["epoch"])
        log(f"resuming {run.path} at epoch {start_epoch}, step {start_step} (global step {global_step})")
    elif resume and main:
        run.truncate_metrics(0)
    if main and not resume:
        run.write_json("run.json", {"code": code_version(), "device": str(device), "world_size": ctx.world_size,
                                    "argv": sys.argv, "num_threads": torch.get_num_threads()})
    history = run.read_metrics() if main else []

    ddp_model = D.wrap_model(model, ctx, cfg.run.sync_bn)
    net = _unwrap(ddp_model)

    def save_last(epoch_done, step_in_epoch, part):
        if not main:
            return
        save_checkpoint(run.last, net.state_dict(), optimizer.state_dict(), {
            "config": cfg.to_dict(), "epoch": epoch_done, "step_in_epoch": step_in_epoch,
            "global_step": global_step, "best_acc": best_acc, "best_epoch": best_epoch, "partial": part,
            "world_size": ctx.world_size, "code": code_version_cached})

    code_version_cached = code_version() if main else {}
    progress = cfg.run.progress and verbose and main
    final = history[-1] if history else None

    for epoch in range(start_epoch, cfg.run.epochs + 1):
        ddp_model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        order = D.batches(n_train, global_bs, cfg.run.seed, epoch, world_size=ctx.world_size)[:steps_per_epoch]
        acc = dict(partial) if epoch == start_epoch else \
            {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0, "data_seconds": 0.0}
        first = start_step if epoch == start_epoch else 0
        bar = _progress_bar(steps_per_epoch, first, f"epoch {epoch}/{cfg.run.epochs}", progress)
        t_epoch = time.perf_counter()
        for step in range(first, steps_per_epoch):
            t0 = time.perf_counter()
            gidx = order[step]
            xb = augment_batch(arrays.x_train[gidx], cfg.data, cfg.run.seed, epoch, step)
            yb = arrays.y_train[gidx]
            global_n = len(gidx)
            xb = to_model_input(D.shard(xb, ctx.rank, ctx.world_size).to(device, non_blocking=True),
                                arrays.sequence)
            yb = D.shard(yb, ctx.rank, ctx.world_size).to(device, non_blocking=True)
            local_n = len(yb)
            t_data = time.perf_counter() - t0

            lr = lr_at(cfg, global_step, steps_per_epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with autocast_context(cfg, device):
                out = ddp_model(xb)
            loss = compute_loss(cfg.loss.name, out, yb, cfg.loss.label_smoothing, cfg.loss.tet_lambda,
                                cfg.loss.tet_phi)
            check = loss.detach().clone().view(1)
            D.all_reduce_sum(check, ctx)
            if not torch.isfinite(check).all():
                _diverged(run, "loss", float(check), epoch, step, main)
            # DDP averages gradients over processes; weight each shard so the result is the global mean
            scaled = loss * (local_n * ctx.world_size / global_n)
            optimizer.zero_grad(set_to_none=True)
            scaled.backward()
            if cfg.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
                if not torch.isfinite(norm):
                    _diverged(run, "gradient norm", float(norm), epoch, step, main)
            optimizer.step()
            global_step += 1

            with torch.no_grad():
                correct = (out.detach().float().mean(0).argmax(-1) == yb).sum()
            stats = torch.tensor([float(loss.detach()) * local_n, float(correct), float(local_n)],
                                 dtype=torch.float64, device=device)
            D.all_reduce_sum(stats, ctx)
            acc["loss_sum"] += float(stats[0])
            acc["correct"] += float(stats[1])
            acc["count"] += float(stats[2])
            acc["data_seconds"] += t_data
            elapsed = acc["seconds"] + (time.perf_counter() - t_epoch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{acc['loss_sum'] / acc['count']:.3f}",
                                acc=f"{100 * acc['correct'] / acc['count']:.1f}%",
                                sps=f"{acc['count'] / max(elapsed, 1e-9):.0f}/s", refresh=False)
            every = cfg.run.checkpoint_every_steps
            if every and (step + 1) % every == 0 and step + 1 < steps_per_epoch:
                save_last(epoch - 1, step + 1, {**acc, "seconds": elapsed})
        if bar is not None:
            bar.close()
        train_seconds = acc["seconds"] + (time.perf_counter() - t_epoch)

        ev = evaluate(ddp_model, arrays.x_test, arrays.y_test, cfg, arrays.sequence, ctx, device)
        epoch_seconds = acc["seconds"] + (time.perf_counter() - t_epoch)
        record = {
            "epoch": epoch, "train_loss": acc["loss_sum"] / acc["count"], "train_acc": acc["correct"] / acc["count"],
            "test_acc": ev["test_acc"], "test_loss": ev["test_loss"], "acc_per_step": ev["acc_per_step"],
            "firing_rates": ev["firing_rates"], "spikes_per_sample": ev["spikes_per_sample"],
            "lr": lr_at(cfg, global_step - 1, steps_per_epoch), "epoch_seconds": epoch_seconds,
            "train_seconds": train_seconds, "samples_per_s": acc["count"] / max(train_seconds, 1e-9),
            "data_fraction": acc["data_seconds"] / max(train_seconds, 1e-9),
            "peak_memory_mb": peak_memory_mb(device), "world_size": ctx.world_size, "global_step": global_step,
        }
        final = record
        if main:
            run.append_metrics(record)
            history.append(record)
            if ev["test_acc"] > best_acc:
                best_acc, best_epoch = ev["test_acc"], epoch
                save_checkpoint(run.best, net.state_dict(), None, {
                    "config": cfg.to_dict(), "epoch": epoch, "test_acc": ev["test_acc"],
                    "code": code_version_cached}, save_rng=False)
        best_acc, best_epoch = D.broadcast_object((best_acc, best_epoch), ctx)
        save_last(epoch, 0, {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0, "data_seconds": 0.0})
        log(f"epoch {epoch}/{cfg.run.epochs}  loss {record['train_loss']:.4f}  train {100 * record['train_acc']:.2f}%"
            f"  test {100 * record['test_acc']:.2f}%  |  {record['samples_per_s']:,.0f} samples/s"
            f"  {epoch_seconds:.1f} s  data {100 * record['data_fraction']:.1f}%  |  "
            f"{record['spikes_per_sample']:,.0f} spikes/sample  lr {record['lr']:.2e}")
    D.barrier(ctx)

    seconds = time.perf_counter() - t_start
    result = {"run_dir": str(run.path), "final": final, "best_acc": best_acc, "best_epoch": best_epoch,
              "seconds": seconds}
    if main and final is not None:
        total_train = sum(r["epoch_seconds"] for r in history)
        run.write_json("summary.json", {"test_acc": final["test_acc"], "best_acc": best_acc,
                                        "best_epoch": best_epoch, "epochs": final["epoch"],
                                        "train_wall_seconds": total_train,
                                        "spikes_per_sample": final["spikes_per_sample"]})
        if cfg.run.plots:
            from .report import write_report

            write_report(run, arrays=arrays, model=net, device=device)
        log(f"done: test accuracy {100 * final['test_acc']:.2f}% (best {100 * best_acc:.2f}% at epoch {best_epoch})"
            f" · {total_train:.1f} s training · {final['spikes_per_sample']:,.0f} spikes/sample · "
            f"{final['samples_per_s']:,.0f} samples/s · {run.path}")
    return result


def _diverged(run: RunDir, what: str, value: float, epoch: int, step: int, main: bool):
    last = f"{run.last}.safetensors"
    kept = f"the last good checkpoint is kept at {last}" if Path(last).is_file() else \
        "no checkpoint had been written yet"
    raise TrainingDivergedError(
        f"training stopped: the {what} became {value} at epoch {epoch}, step {step}; {kept}. "
        "Lower optim.lr, set optim.grad_clip, or check the input data.")
