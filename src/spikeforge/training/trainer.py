"""The training loop: BPTT through T steps with surrogate gradients, one readable function.

Per step: take the global batch (order fixed by ``(seed, epoch)``), augment it (generator seeded by
``(seed, epoch, step)``), keep this process's shard, run the model to per-step outputs ``[T, B, K]``
(bfloat16 autocast when ``run.amp=bf16``), compute the loss (:mod:`~spikeforge.training.losses`), stop
on a non-finite loss, gradient, updated parameter or buffer (one inf-norm reduction per step; the last good
checkpoint stays the last one written), clip, step the optimiser at the scheduled learning rate. Every
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
    ['T', 'acc_per_step', 'data_fraction', 'epoch']
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
from .checkpoint import (NonFiniteCheckpointError, checkpoint_exists, load_checkpoint, load_model_state,
                         restore_rng_state, save_checkpoint)
from .data import Arrays, data_metrics, describe_data, eval_batches, load_data, to_model_input, train_batches
from ..methods import StepContext, create_method
from ..models.build import build_model
from .losses import compute_loss
from .runs import RunDir, code_version, default_run_name


class TrainingDivergedError(RuntimeError):
    """The loss, a gradient, a parameter or a buffer became NaN or infinite; the last good checkpoint is kept.
    Every ``spikeforge`` command exits with status :attr:`exit_status` on it."""

    exit_status = 3


#: evaluating BatchNorm running statistics fed by fewer training batches than this prints a warning: with
#: momentum 0.1 the initial (0, 1) statistics still weigh 0.9**n (0.18 after 16 batches, 0.005 after 50)
BN_MIN_BATCHES = 50


def _zero_partial() -> dict:
    return {"loss_sum": 0.0, "correct": 0.0, "count": 0.0, "seconds": 0.0, "data_seconds": 0.0}


# ------------------------------------------------------------------------------------------- building
def param_groups(cfg: TrainConfig, model: torch.nn.Module) -> list[dict]:
    """Optimiser groups: every module with a ``param_groups(lr)`` method (GLIF: gates at lr/10, no weight decay)
    gets its own groups; the rest share ``optim.lr`` and ``optim.weight_decay``.  Each group records
    ``lr_scale`` (its lr / ``optim.lr``) so the schedule keeps the ratios."""
    lr, groups, seen = cfg.optim.lr, [], set()
    for m in model.modules():
        fn = getattr(m, "param_groups", None)
        if not callable(fn) or isinstance(m, torch.optim.Optimizer):
            continue
        for g in fn(lr):
            ps = [p for p in g["params"] if p.requires_grad and id(p) not in seen]
            seen.update(id(p) for p in ps)
            if ps:
                groups.append({**g, "params": ps, "lr_scale": g.get("lr", lr) / lr if lr else 1.0})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    return ([{"params": rest, "lr_scale": 1.0}] if rest or not groups else []) + groups


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    params = param_groups(cfg, model)
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
             ctx: D.DistContext | None = None, device: torch.device | None = None, warn_bn: bool = True) -> dict:
    """Test metrics: accuracy (of the time-averaged output) and at every t <= T, loss, firing rates.

    Under DDP each process evaluates a strided shard and the sums are all-reduced.
    """
    from ..analysis import FiringRateMonitor
    from ..analysis.monitor import neuron_modules

    ctx = ctx or D.DistContext()
    device = device or ctx.device
    model = _unwrap(model)
    if warn_bn:
        warn_few_bn_batches(model)
    was_training = model.training
    model.eval()
    has_neurons = bool(neuron_modules(model))
    monitor = FiringRateMonitor(model) if has_neurons else None
    idx_all = D.shard(torch.arange(len(y)), ctx.rank, ctx.world_size)
    correct_t = loss_sum = n = None
    try:
        for xb, yb in eval_batches(x, y, idx_all, cfg.data.eval_batch_size):
            xb = to_model_input(xb.to(device, non_blocking=True), sequence)
            yb = yb.to(device)
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


def warn_few_bn_batches(model: torch.nn.Module) -> bool:
    """Warn (stderr) when a BatchNorm's running statistics come from fewer than :data:`BN_MIN_BATCHES` batches."""
    counts = [int(m.num_batches_tracked) for m in model.modules()
              if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
              and m.num_batches_tracked is not None]
    if not counts or min(counts) >= BN_MIN_BATCHES:
        return False
    print(f"spikeforge: warning: evaluating with BatchNorm running statistics from only {min(counts)} training "
          f"batches (< {BN_MIN_BATCHES}); test accuracy can be far below train accuracy until more steps are "
          "trained", file=sys.stderr)
    return True


# ------------------------------------------------------------------------------------------- training
def _progress_bar(total, initial, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar (no \r frames) when stderr is not a terminal; the epoch lines still print
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                mininterval=0.5, file=sys.stderr, disable=None)


RUNTIME_KEYS = ("run.device", "run.progress", "run.epochs")  # what a resumed run may change (epochs: extend it)


def _open_for_resume(run_dir, runtime) -> tuple[RunDir, TrainConfig, dict | None]:
    """The run folder, its stored config (with the ``runtime`` overrides) and its ``last`` checkpoint.

    A run with no ``last`` checkpoint resumes from the start only when it has nothing to lose (no epoch
    records, no ``best``); otherwise it is refused, so nothing is truncated or overwritten.
    """
    if run_dir is None:
        raise ValueError("resume: give the run folder to continue (spikeforge train --resume RUN_DIR)")
    run = RunDir.open(run_dir)
    cfg = run.load_config()
    bad = [k for k in (runtime or {}) if k not in RUNTIME_KEYS]
    if bad:
        raise ValueError(f"resume: {bad[0]} cannot change on resume; allowed: {', '.join(RUNTIME_KEYS)}")
    stored_epochs = cfg.run.epochs
    if runtime:
        cfg = cfg.override([f"{k}={v}" for k, v in runtime.items()])
    if checkpoint_exists(run.last):
        ckpt = load_checkpoint(run.last)
        if cfg.run.epochs != stored_epochs:
            done = ckpt["meta"].get("epoch")
            if isinstance(done, int) and cfg.run.epochs < done:
                raise ValueError(f"--epochs: {cfg.run.epochs} is fewer than the {done} epochs {run.path} has "
                                 f"already trained; allowed: {done} or more")
            # the run's config now says how far it goes; --device and --no-progress apply to this call only
            run.load_config().override([f"run.epochs={cfg.run.epochs}"]).to_yaml(run.config_path)
        return run, cfg, ckpt
    if run.read_metrics() or checkpoint_exists(run.best):
        raise ValueError(f"resume: {run.last}.safetensors is missing, so {run.path} cannot continue where it "
                         "stopped (its metrics and best checkpoint are kept); evaluate it with spikeforge eval, "
                         "or start a new run with --out NEW_DIR")
    return run, cfg, None


def _check_resume_meta(meta: dict, source, cfg: TrainConfig, steps_per_epoch: int) -> None:
    """The fields a resume reads exist and lie in range, or one ``ValueError`` naming the file and field."""
    def need(key, ok, allowed):
        if key not in meta or not ok(meta[key]):
            found = repr(meta[key]) if key in meta else "nothing"
            raise ValueError(f"{source}: metadata field {key!r} is {found}; expected {allowed}")

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    need("epoch", lambda v: is_int(v) and 0 <= v <= cfg.run.epochs, f"an integer in 0..{cfg.run.epochs}")
    need("step_in_epoch", lambda v: is_int(v) and 0 <= v < steps_per_epoch,
         f"an integer in 0..{steps_per_epoch - 1}")
    need("global_step", lambda v: is_int(v) and v >= 0, "an integer >= 0")
    need("best_acc", lambda v: isinstance(v, (int, float)) and -1 <= v <= 1, "a number in [-1, 1]")
    need("best_epoch", lambda v: is_int(v) and 0 <= v <= meta.get("epoch", 0), "an integer in 0..epoch")
    need("partial", lambda v: isinstance(v, dict) and set(_zero_partial()) <= set(v)
         and all(isinstance(v[k], (int, float)) for k in _zero_partial()),
         "a mapping with " + ", ".join(_zero_partial()))
    need("rng", lambda v: isinstance(v, dict) and {"numpy", "python"} <= set(v), "the saved RNG state")


def _new_run_folder(cfg, run_dir, force, ctx) -> RunDir:
    """Create the run folder on rank 0 and write its config; every process learns its path."""
    path = None
    if ctx.is_main:
        path = Path(run_dir) if run_dir is not None else \
            Path(cfg.run.out_dir) / (cfg.run.name or default_run_name(cfg.data.name, cfg.model.name))
        run = RunDir.create(path, force=force)
        try:
            cfg.to_yaml(run.config_path)
        except BaseException:
            import shutil

            shutil.rmtree(run.path, ignore_errors=True)  # only the marker and config of this call are in it
            raise
        path = str(path)
    path = D.broadcast_object(path, ctx)
    return RunDir(path)


def train(cfg: TrainConfig, run_dir=None, *, resume: bool = False, force: bool = False, data_dir=None,
          model: torch.nn.Module | None = None, verbose: bool = True, runtime: dict | None = None,
          init_from=None) -> dict:
    """Train ``cfg`` into a run folder; returns ``{"run_dir", "final", "best_acc", "best_epoch", "seconds"}``.

    ``resume=True`` continues ``run_dir`` from its ``last`` checkpoint with the config stored there;
    ``runtime`` may change its ``run.device`` / ``run.progress`` (e.g. ``{"run.device": "cpu"}``).
    ``model`` replaces the registered model (e.g. a baseline built by hand); it must return ``[T, B, K]``.
    ``init_from`` (a run folder or a ``.safetensors`` file) starts a new run from those weights
    (:mod:`spikeforge.training.finetune`).
    Raises :class:`TrainingDivergedError` on a non-finite loss, gradient, parameter or buffer, after keeping
    the last good checkpoint. The data, model and optimiser are built before a new run folder is created,
    and a new run that stops on an error (not Ctrl-C) before its first checkpoint or epoch record removes the
    folder it created.
    """
    t_start = time.perf_counter()
    opened = _open_for_resume(run_dir, runtime) if resume else None
    if opened is not None:
        cfg = opened[1]
    ctx = D.init_distributed(cfg.run.device, cfg.run.dist_timeout_s)
    try:
        return _train(cfg, run_dir, opened, force, data_dir, model, verbose, ctx, t_start, init_from)
    finally:
        D.shutdown(ctx)


def _train(cfg, run_dir, opened, force, data_dir, model, verbose, ctx, t_start, init_from=None):
    resume = opened is not None
    if resume and init_from is not None:
        raise ValueError("--init-from starts a new run from trained weights; --resume continues a run: use one")
    run, ckpt = None, None
    if resume:
        run, cfg, ckpt = opened
    if ctx.world_size == 1:  # the config decides the device; torchrun's env decides under DDP
        ctx = D.DistContext(device=D.resolve_device(cfg.run.device))
    device = ctx.device
    main = ctx.is_main
    log = print if (verbose and main) else (lambda *a, **k: None)
    seed_everything(cfg.run.seed, cfg.run.deterministic)

    arrays = load_data(cfg.data, data_dir, seed=cfg.run.seed, device=device)
    log(describe_data(arrays, cfg.data))
    if model is None:
        model = build_model(cfg, arrays)
    method = create_method(cfg.method.name, cfg.method.kwargs)
    method.check(model, cfg)  # before anything is written: a model it cannot train is one error
    model = method.prepare(model).to(device)
    if init_from is not None:
        from .finetune import init_weights

        log(f"initialised from {init_weights(model, init_from)}")
    optimizer = build_optimizer(cfg, model)
    global_bs = cfg.data.batch_size
    if global_bs < ctx.world_size:
        raise ValueError(f"data.batch_size: {global_bs} is smaller than the number of processes "
                         f"({ctx.world_size}); it is the global batch, split across processes")

    n_train = len(arrays.y_train)
    D.check_last_batch(n_train, global_bs, ctx.world_size, cfg.data.drop_last)
    steps_per_epoch = len(D.batches(n_train, global_bs, 0, 0, drop_last=cfg.data.drop_last))
    if cfg.run.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.run.max_steps_per_epoch)

    # --- state that a checkpoint restores
    start_epoch, start_step, global_step = 1, 0, 0
    best_acc, best_epoch = -1.0, 0
    partial = _zero_partial()
    if ckpt is not None:
        meta = ckpt["meta"]
        _check_resume_meta(meta, f"{run.last}.safetensors", cfg, steps_per_epoch)
        if ckpt["optimizer"] is None:
            raise ValueError(f"{run.last}.safetensors: holds no optimizer state, so the run cannot be resumed")
        load_model_state(model, ckpt["model"], f"{run.last}.safetensors")
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(f"{run.last}.safetensors: optimizer state does not fit optim.name="
                             f"{cfg.optim.name!r} on this model ({str(e).splitlines()[0]})") from None
        start_epoch, start_step, global_step = meta["epoch"] + 1, meta["step_in_epoch"], meta["global_step"]
        best_acc, best_epoch = float(meta["best_acc"]), meta["best_epoch"]
        partial = {k: float(meta["partial"][k]) for k in _zero_partial()}
        restore_rng_state(meta["rng"], ckpt["tensors"])
        if main:
            run.truncate_metrics(meta["epoch"])
        log(f"resuming {run.path} at epoch {start_epoch}, step {start_step} (global step {global_step})")
    elif resume:
        log(f"resuming {run.path}: no checkpoint was written yet, starting at epoch 1")
        if main:
            run.truncate_metrics(0)
    else:
        run = _new_run_folder(cfg, run_dir, force, ctx)
    try:
        return _loop(cfg, run, resume, ctx, device, main, log, arrays, model, method, optimizer, steps_per_epoch,
                     start_epoch, start_step, global_step, best_acc, best_epoch, partial, verbose, t_start)
    except BaseException as e:
        if main and not resume and not isinstance(e, KeyboardInterrupt) and not checkpoint_exists(run.last) \
                and not run.read_metrics(strict=False):
            # a failed start: remove the folder this call created (it holds only what this call wrote); an
            # interrupted run keeps it, since the CLI tells the user to --resume it
            import shutil

            shutil.rmtree(run.path, ignore_errors=True)
        raise


def _loop(cfg, run, resume, ctx, device, main, log, arrays, model, method, optimizer, steps_per_epoch, start_epoch,
          start_step, global_step, best_acc, best_epoch, partial, verbose, t_start):
    global_bs, n_train = cfg.data.batch_size, len(arrays.y_train)
    def loss_fn(out, y):
        return compute_loss(cfg.loss.name, out, y, cfg.loss.label_smoothing, cfg.loss.tet_lambda, cfg.loss.tet_phi)

    if main and not resume:
        run.write_json("run.json", {"code": code_version(), "device": str(device), "world_size": ctx.world_size,
                                    "argv": sys.argv, "num_threads": torch.get_num_threads()})
    history = run.read_metrics() if main else []

    ddp_model = D.wrap_model(model, ctx, cfg.run.sync_bn)
    net = _unwrap(ddp_model)
    state_tensors = [t for t in list(net.parameters()) + list(net.buffers()) if t.is_floating_point()]

    def save_last(epoch_done, step_in_epoch, part):
        if not main:
            return
        try:
            save_checkpoint(run.last, net.state_dict(), optimizer.state_dict(), {
                "config": cfg.to_dict(), "epoch": epoch_done, "step_in_epoch": step_in_epoch,
                "global_step": global_step, "best_acc": best_acc, "best_epoch": best_epoch, "partial": part,
                "world_size": ctx.world_size, "code": code_version_cached})
        except NonFiniteCheckpointError as e:  # e.g. an optimiser moment overflowed while the weights did not
            raise TrainingDivergedError(f"training stopped at epoch {epoch_done + 1}, step {step_in_epoch}: {e}. "
                                        "Lower optim.lr or set optim.grad_clip.") from None

    code_version_cached = code_version() if main else {}

    def update_now():  # a method's extra update inside train_step (OTTT_O: one per time step)
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    progress = cfg.run.progress and verbose and main
    final = history[-1] if history else None
    tb = None
    if main and cfg.run.tensorboard:
        from .tensorboard import TensorBoardSink

        tb = TensorBoardSink(run.path)

    for epoch in range(start_epoch, cfg.run.epochs + 1):
        ddp_model.train()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        order = D.batches(n_train, global_bs, cfg.run.seed, epoch, drop_last=cfg.data.drop_last)[:steps_per_epoch]
        acc = dict(partial) if epoch == start_epoch else _zero_partial()
        first = start_step if epoch == start_epoch else 0
        bar = _progress_bar(steps_per_epoch, first, f"epoch {epoch}/{cfg.run.epochs}", progress)
        t_epoch = time.perf_counter()
        shards = train_batches(arrays, cfg.data, cfg.run.seed, epoch, order, first, ctx.rank, ctx.world_size)
        for step in range(first, steps_per_epoch):
            t0 = time.perf_counter()
            xb, yb, global_n = next(shards)  # this process's shard of the global batch order[step]
            xb = to_model_input(xb.to(device, non_blocking=True), arrays.sequence)
            yb = yb.to(device, non_blocking=True)
            local_n = len(yb)
            t_data = time.perf_counter() - t0

            lr = lr_at(cfg, global_step, steps_per_epoch)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over processes; weight each shard so the result is the global mean
            try:
                res = method.train_step(ddp_model, xb, yb, StepContext(
                    epoch=epoch, step=step, global_step=global_step, loss_fn=loss_fn,
                    loss_scale=local_n * ctx.world_size / global_n, autocast=lambda: autocast_context(cfg, device),
                    T=cfg.model.T, update=update_now))
            except ValueError as e:  # a neuron refusing NaN/inf input while the batch is finite: the model overflowed
                if "NaN or inf" not in str(e) or not torch.isfinite(xb).all():
                    raise
                _diverged(run, "input of a spiking layer", "nan or inf (the batch was finite: a layer's output "
                          "overflowed)", epoch, step, main)
            loss, out = res.loss, res.logits
            check = loss.detach().clone().view(1)
            D.all_reduce_sum(check, ctx)
            if not torch.isfinite(check).all():
                _diverged(run, "loss", float(check), epoch, step, main)
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.optim.grad_clip)
            grad_norms = _norms([p.grad for p in net.parameters() if p.grad is not None], device)  # no sync yet
            optimizer.step()
            _check_finite(grad_norms, state_tensors, ctx, run, epoch, step, main, net)
            global_step += 1

            with torch.no_grad():
                pred = out.detach().float()
                correct = ((pred.mean(0) if pred.dim() == 3 else pred).argmax(-1) == yb).sum()
            stats = torch.tensor([float(loss.detach()) * local_n, float(correct), float(local_n)],
                                 dtype=torch.float64, device=device)
            D.all_reduce_sum(stats, ctx)
            acc["loss_sum"] += float(stats[0])
            acc["correct"] += float(stats[1])
            acc["count"] += float(stats[2])
            acc["data_seconds"] += t_data
            elapsed = acc["seconds"] + (time.perf_counter() - t_epoch)
            if tb is not None:
                tb.step(global_step, loss=acc["loss_sum"] / acc["count"], acc=acc["correct"] / acc["count"], lr=lr)
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

        ev = evaluate(ddp_model, arrays.x_test, arrays.y_test, cfg, arrays.sequence, ctx, device,
                      warn_bn=epoch == start_epoch)
        epoch_seconds = acc["seconds"] + (time.perf_counter() - t_epoch)
        record = {
            "epoch": epoch, "train_loss": acc["loss_sum"] / acc["count"], "train_acc": acc["correct"] / acc["count"],
            "test_acc": ev["test_acc"], "test_loss": ev["test_loss"], "acc_per_step": ev["acc_per_step"],
            "firing_rates": ev["firing_rates"], "spikes_per_sample": ev["spikes_per_sample"],
            "lr": lr_at(cfg, global_step - 1, steps_per_epoch), "epoch_seconds": epoch_seconds,
            "train_seconds": train_seconds, "samples_per_s": acc["count"] / max(train_seconds, 1e-9),
            "data_fraction": acc["data_seconds"] / max(train_seconds, 1e-9),
            "peak_memory_mb": peak_memory_mb(device), "world_size": ctx.world_size, "global_step": global_step,
            "method": cfg.method.name, "T": len(ev["acc_per_step"]), **data_metrics(arrays),
        }
        record.update(getattr(method, "epoch_metrics", dict)())  # a method's own per-epoch fields (bats: dropped)
        final = record
        if main:
            run.append_metrics(record)
            history.append(record)
            if tb is not None:
                tb.epoch(record)
            if ev["test_acc"] > best_acc:
                best_acc, best_epoch = ev["test_acc"], epoch
                save_checkpoint(run.best, net.state_dict(), None, {
                    "config": cfg.to_dict(), "epoch": epoch, "test_acc": ev["test_acc"],
                    "code": code_version_cached}, save_rng=False)
        best_acc, best_epoch = D.broadcast_object((best_acc, best_epoch), ctx)
        save_last(epoch, 0, _zero_partial())
        log(f"epoch {epoch}/{cfg.run.epochs}  loss {record['train_loss']:.4f}  train {100 * record['train_acc']:.2f}%"
            f"  test {100 * record['test_acc']:.2f}%  |  {record['samples_per_s']:,.0f} samples/s"
            f"  {epoch_seconds:.1f} s  data {100 * record['data_fraction']:.1f}%  |  "
            f"{record['spikes_per_sample']:,.0f} spikes/sample  lr {record['lr']:.2e}")
    D.barrier(ctx)
    if tb is not None:
        tb.close()

    finalized = None
    deployed = method.finalize(net)
    if deployed is not net:  # the method's deployed form (e.g. another T): evaluated and recorded
        finalized = evaluate(deployed, arrays.x_test, arrays.y_test, cfg, arrays.sequence, ctx, device)
        log(f"finalized ({cfg.method.name}): test accuracy {100 * finalized['test_acc']:.2f}% at "
            f"T={len(finalized['acc_per_step'])} · {finalized['spikes_per_sample']:,.0f} spikes/sample")
    if main and callable(getattr(method, "write_artifacts", None)):  # a method's own plots/reports in the run folder
        method.write_artifacts(run.path, deployed)
    seconds = time.perf_counter() - t_start
    result = {"run_dir": str(run.path), "final": final, "best_acc": best_acc, "best_epoch": best_epoch,
              "seconds": seconds, "finalized": finalized}
    if main and final is not None:
        total_train = sum(r["epoch_seconds"] for r in history)
        run.write_json("summary.json", {"test_acc": final["test_acc"], "best_acc": best_acc,
                                        "best_epoch": best_epoch, "epochs": final["epoch"],
                                        "train_wall_seconds": total_train,
                                        "spikes_per_sample": final["spikes_per_sample"],
                                        "method": cfg.method.name,
                                        **({"finalized": finalized} if finalized is not None else {})})
        if cfg.run.plots:
            from .report import write_report

            try:
                write_report(run, arrays=arrays, model=net, device=device)
            except OSError as e:  # a full or read-only disk: the finished run stands; the report can be redrawn
                print(f"spikeforge: warning: could not write the report: {e.filename}: {e.strerror or e}; "
                      f"free space and run `spikeforge report {run.path}`", file=sys.stderr)
        log(f"done: test accuracy {100 * final['test_acc']:.2f}% (best {100 * best_acc:.2f}% at epoch {best_epoch})"
            f" · {total_train:.1f} s training · {final['spikes_per_sample']:,.0f} spikes/sample · "
            f"{final['samples_per_s']:,.0f} samples/s · {run.path}")
    return result


@torch.no_grad()
def _norms(tensors: list[torch.Tensor], device) -> torch.Tensor:
    """Per-tensor L2 norms (one fused reduction): non-finite when a value is NaN or inf, or when a huge but
    finite tensor overflows float32, which :func:`_check_finite` then tells apart exactly."""
    if not tensors:
        return torch.zeros(0, device=device)
    return torch.stack([n.float() for n in torch._foreach_norm(tensors, 2)])


@torch.no_grad()
def _check_finite(grad_norms, state_tensors, ctx, run, epoch, step, main, net):
    """Stop when a gradient, or a parameter or buffer after the update, holds NaN or inf (in any process)."""
    norms = torch.cat([grad_norms, _norms(state_tensors, grad_norms.device)])
    flag = (~torch.isfinite(norms)).any().double().view(1)
    D.all_reduce_sum(flag, ctx)
    if not flag.item():
        return
    bad_grad = [n for n, p in net.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    bad_state = [n for n, t in list(net.named_parameters()) + list(net.named_buffers())
                 if t.is_floating_point() and not torch.isfinite(t).all()]
    bad = torch.tensor([float(bool(bad_grad or bad_state))], dtype=torch.float64, device=norms.device)
    D.all_reduce_sum(bad, ctx)
    if not bad.item():  # only a float32 overflow of the norm: huge but finite values
        return
    if bad_grad:
        _diverged(run, f"gradient of {bad_grad[0]!r}", "nan or inf", epoch, step, main)
    where = f"parameter or buffer {bad_state[0]!r}" if bad_state else "a parameter or buffer of another process"
    _diverged(run, where + " after the optimiser step", "nan or inf", epoch, step, main)


def _diverged(run: RunDir, what: str, value, epoch: int, step: int, main: bool):
    last = f"{run.last}.safetensors"
    kept = f"the last good checkpoint is kept at {last}" if Path(last).is_file() else \
        "no checkpoint had been written yet"
    fix = "Lower optim.lr, set optim.grad_clip, or check the input data"
    if Path(last).is_file():  # --resume would replay the same config into the same NaN
        fix += f" (a new run starts from that checkpoint: spikeforge train --init-from {last} --set optim.lr=...)"
    raise TrainingDivergedError(
        f"training stopped: the {what} became {value} at epoch {epoch}, step {step}; {kept}. {fix}.")
