"""Typed run configuration: frozen, validated, versioned dataclasses that YAML files and ``--set`` resolve to.

A :class:`TrainConfig` has seven sections, each a frozen dataclass validated in ``__post_init__``:
``data`` (:class:`DataConfig`), ``model`` (:class:`ModelConfig`), ``optim`` (:class:`OptimConfig`),
``schedule`` (:class:`ScheduleConfig`), ``loss`` (:class:`LossConfig`), ``run`` (:class:`RunConfig`) and
``method`` (:class:`MethodConfig`).
YAML is read from an allow-list: an unknown key raises ValueError naming it and listing the valid keys; a
bad value raises ValueError naming the key, the value and what is allowed. ``to_dict``/``from_dict``
round-trip exactly and carry ``version`` so a run folder's ``config.yaml`` stays loadable.

Example:
    >>> from spikeforge.config import TrainConfig
    >>> cfg = TrainConfig().override(["optim.lr=0.01", "model.T=2"])
    >>> cfg.optim.lr, cfg.model.T
    (0.01, 2)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    >>> TrainConfig.from_dict({"optim": {"lr_rate": 1}})
    Traceback (most recent call last):
    ...
    ValueError: unknown config key 'optim.lr_rate'; valid keys of 'optim': name, lr, weight_decay, momentum, nesterov, betas, grad_clip
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_VERSION = 1


# ----------------------------------------------------------------------------------------------- checks
def _fail(key, value, allowed):
    raise ValueError(f"config key {key!r}: got {value!r}; allowed: {allowed}")


def _check_choice(key, value, choices):
    if value not in choices:
        _fail(key, value, "one of " + ", ".join(repr(c) for c in choices))


def _check_int(key, value, low=None):
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        _fail(key, value, f"an integer >= {low}" if low is not None else "an integer")


def _check_float(key, value, low=None, high=None, low_inclusive=True):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        lo = "" if low is None else (f" >= {low}" if low_inclusive else f" > {low}")
        hi = "" if high is None else f" and <= {high}"
        _fail(key, value, f"a number{lo}{hi}")


# ---------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig:
    """What to train on. ``batch_size`` is the global batch (split across processes under DDP).

    ``augment``: ``none``, ``crop`` (random shift by up to ``crop_padding`` pixels) or ``crop_flip`` (plus
    horizontal flips). ``frames`` > 0 turns an event set into that many frames (a ``[T, B, C, H, W]`` input).
    ``train_subset``/``test_subset`` > 0 keep only the first N samples (quick runs and tests).
    ``drop_last`` drops an epoch's last batch when it is smaller than ``batch_size`` (needed under DDP when
    that batch would hold fewer samples than there are processes).
    ``loader``: ``memory`` (whole set in RAM), ``stream`` (a DataLoader with ``num_workers`` processes, see
    docs/data.md) or ``auto`` (memory when the set fits, else stream; the run records which). ``rrc``/``rrc_flip``:
    random-resized crop (and flip) of image folders on the streaming path. ``bad_files``: ``fail`` on an
    unreadable file, or ``skip`` it and count it (``skipped_samples`` in the metrics).
    """

    name: str = "digits"
    data_dir: str | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    normalize: bool = True
    augment: str = "none"
    crop_padding: int = 2
    frames: int = 0
    train_subset: int = 0
    test_subset: int = 0
    drop_last: bool = False
    options: dict = field(default_factory=dict)
    loader: str = "auto"
    num_workers: int = 2
    bad_files: str = "fail"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            _fail("data.name", self.name, "a dataset name (see `spikeforge datasets`)")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            _fail("data.data_dir", self.data_dir, "a folder path or null")
        _check_int("data.batch_size", self.batch_size, 1)
        _check_int("data.eval_batch_size", self.eval_batch_size, 1)
        _check_choice("data.augment", self.augment, ("none", "crop", "crop_flip", "rrc", "rrc_flip"))
        _check_choice("data.loader", self.loader, ("auto", "memory", "stream"))
        _check_int("data.num_workers", self.num_workers, 0)
        _check_choice("data.bad_files", self.bad_files, ("fail", "skip"))
        _check_int("data.crop_padding", self.crop_padding, 0)
        _check_int("data.frames", self.frames, 0)
        _check_int("data.train_subset", self.train_subset, 0)
        _check_int("data.test_subset", self.test_subset, 0)
        for k in ("normalize", "drop_last"):
            if not isinstance(getattr(self, k), bool):
                _fail(f"data.{k}", getattr(self, k), "true or false")
        if not isinstance(self.options, dict):
            _fail("data.options", self.options, "a mapping of dataset-specific options")


@dataclass(frozen=True)
class ModelConfig:
    """A registered model (``spikeforge models``) and its neuron; ``kwargs`` go to the model's constructor."""

    name: str = "convnet"
    neuron: str = "lif"
    T: int = 4
    encoder: str = "direct"
    neuron_kwargs: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            _fail("model.name", self.name, "a model name (see `spikeforge models`)")
        if not isinstance(self.neuron, str) or not self.neuron:
            _fail("model.neuron", self.neuron, "a neuron name (see `spikeforge neurons`)")
        _check_int("model.T", self.T, 1)
        if not isinstance(self.encoder, str):
            _fail("model.encoder", self.encoder, "an encoder name")
        for k in ("neuron_kwargs", "kwargs"):
            if not isinstance(getattr(self, k), dict):
                _fail(f"model.{k}", getattr(self, k), "a mapping")
        reserved = {"T": "model.T", "neuron": "model.neuron", "neuron_kwargs": "model.neuron_kwargs",
                    "num_classes": "the dataset", "in_channels": "the dataset"}
        for k in self.kwargs:
            if k in reserved:
                raise ValueError(f"model.kwargs.{k}: set by {reserved[k]}, not by model.kwargs"
                                 + (f"; use --set {reserved[k]}=..." if reserved[k].startswith("model.") else ""))


OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser; ``grad_clip`` > 0 clips the global gradient norm to it."""

    name: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple = (0.9, 0.999)
    grad_clip: float = 0.0

    def __post_init__(self):
        _check_choice("optim.name", self.name, OPTIMIZERS)
        _check_float("optim.lr", self.lr, 0.0, low_inclusive=False)
        _check_float("optim.weight_decay", self.weight_decay, 0.0)
        _check_float("optim.momentum", self.momentum, 0.0, 1.0)
        _check_float("optim.grad_clip", self.grad_clip, 0.0)
        if not isinstance(self.nesterov, bool):
            _fail("optim.nesterov", self.nesterov, "true or false")
        b = self.betas
        if not (isinstance(b, (tuple, list)) and len(b) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1 for v in b)):
            _fail("optim.betas", b, "two numbers in [0, 1)")
        object.__setattr__(self, "betas", tuple(float(v) for v in b))


SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, applied every step: linear warm-up over ``warmup_epochs``, then ``constant``,
    ``cosine`` (down to ``lr * min_lr_ratio``) or ``step`` (times ``gamma`` every ``step_epochs``)."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    step_epochs: int = 30
    gamma: float = 0.1

    def __post_init__(self):
        _check_choice("schedule.name", self.name, SCHEDULES)
        _check_float("schedule.warmup_epochs", self.warmup_epochs, 0.0)
        _check_float("schedule.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_int("schedule.step_epochs", self.step_epochs, 1)
        _check_float("schedule.gamma", self.gamma, 0.0, 1.0, low_inclusive=False)


LOSSES = ("ce", "tet", "mse")


@dataclass(frozen=True)
class LossConfig:
    """``ce``: cross-entropy of the time-averaged output; ``tet``: per-step cross-entropy averaged over T
    (plus ``tet_lambda`` times the MSE of each step's output to ``tet_phi``); ``mse``: MSE between the
    time-averaged output (firing rate) and the one-hot target."""

    name: str = "ce"
    label_smoothing: float = 0.0
    tet_lambda: float = 0.0
    tet_phi: float = 1.0

    def __post_init__(self):
        _check_choice("loss.name", self.name, LOSSES)
        _check_float("loss.label_smoothing", self.label_smoothing, 0.0, 1.0)
        _check_float("loss.tet_lambda", self.tet_lambda, 0.0, 1.0)
        _check_float("loss.tet_phi", self.tet_phi)


@dataclass(frozen=True)
class RunConfig:
    """How to run: epochs, seed, device (``auto`` = CUDA when available), mixed precision (``amp``:
    ``off`` or ``bf16``), checkpoint cadence and where run folders go (``out_dir/name``). Under DDP a process
    waits at most ``dist_timeout_s`` seconds for the others before the run fails.  ``tensorboard``: also write
    the metrics as TensorBoard scalars (``RUN_DIR/tensorboard``)."""

    epochs: int = 8
    seed: int = 0
    device: str = "auto"
    amp: str = "off"
    deterministic: bool = True
    checkpoint_every_steps: int = 100
    max_steps_per_epoch: int = 0
    sync_bn: bool = True
    out_dir: str = "runs"
    name: str | None = None
    progress: bool = True
    plots: bool = True
    dist_timeout_s: float = 600.0
    tensorboard: bool = False

    def __post_init__(self):
        _check_int("run.epochs", self.epochs, 1)
        _check_int("run.seed", self.seed, 0)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            _fail("run.device", self.device, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check_choice("run.amp", self.amp, ("off", "bf16"))
        _check_int("run.checkpoint_every_steps", self.checkpoint_every_steps, 0)
        _check_int("run.max_steps_per_epoch", self.max_steps_per_epoch, 0)
        if not isinstance(self.out_dir, str) or not self.out_dir:
            _fail("run.out_dir", self.out_dir, "a folder path")
        if self.name is not None and (not isinstance(self.name, str) or not self.name or "/" in self.name):
            _fail("run.name", self.name, "a folder name without '/' (or null for an automatic one)")
        _check_float("run.dist_timeout_s", self.dist_timeout_s, 0, low_inclusive=False)
        for k in ("deterministic", "sync_bn", "progress", "plots", "tensorboard"):
            if not isinstance(getattr(self, k), bool):
                _fail(f"run.{k}", getattr(self, k), "true or false")


@dataclass(frozen=True)
class MethodConfig:
    """The training method (``spikeforge methods``); ``kwargs`` are its options, validated against its
    ``Config``."""

    name: str = "bptt"
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.kwargs, dict):
            _fail("method.kwargs", self.kwargs, "a mapping of the method's options")
        from .methods import METHODS, create_method

        if self.name not in METHODS:
            _fail("method.name", self.name, "one of " + ", ".join(METHODS.list()) + " (see `spikeforge methods`)")
        create_method(self.name, self.kwargs)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
            "loss": LossConfig, "run": RunConfig, "method": MethodConfig}


@dataclass(frozen=True)
class TrainConfig:
    """The whole run: one section per concern plus the schema ``version``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    run: RunConfig = field(default_factory=RunConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    version: int = CONFIG_VERSION

    def __post_init__(self):
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                _fail(name, getattr(self, name), f"a {cls.__name__}")
        if self.version != CONFIG_VERSION:
            _fail("version", self.version, f"{CONFIG_VERSION} (the schema this spikeforge reads)")

    # ------------------------------------------------------------------------------------ conversion
    def to_dict(self) -> dict:
        """Plain data (lists for tuples), loadable by :meth:`from_dict` and YAML."""
        out = {"version": self.version}
        for name in SECTIONS:
            sec = {}
            for f in dataclasses.fields(getattr(self, name)):
                v = getattr(getattr(self, name), f.name)
                sec[f.name] = list(v) if isinstance(v, tuple) else copy.deepcopy(v)
            out[name] = sec
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ValueError(f"config: expected a mapping of sections, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("version", CONFIG_VERSION)
        unknown = [k for k in d if k not in SECTIONS]
        if unknown:
            raise ValueError(f"unknown config key {unknown[0]!r}; valid top-level keys: version, "
                             + ", ".join(SECTIONS))
        kwargs = {}
        for name, sec_cls in SECTIONS.items():
            sec = d.get(name) or {}
            if not isinstance(sec, dict):
                _fail(name, sec, "a mapping of keys")
            valid = [f.name for f in dataclasses.fields(sec_cls)]
            for k in sec:
                if k not in valid:
                    raise ValueError(f"unknown config key '{name}.{k}'; valid keys of {name!r}: {', '.join(valid)}")
            kwargs[name] = sec_cls(**{k: _coerce(sec_cls, k, v, name) for k, v in sec.items()})
        return cls(version=version, **kwargs)

    @classmethod
    def from_yaml(cls, path, overrides: list[str] | None = None) -> "TrainConfig":
        """Load a YAML file (allow-listed keys only), then apply ``overrides`` (``"a.b=value"``)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        try:
            with open(path) as f:
                d = yaml.load(f, Loader=_unique_key_loader()) or {}
        except _DuplicateKey as e:
            raise ValueError(f"{path}: {e}; keep one") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a text file ({e.reason} at byte {e.start})") from None
        try:
            cfg = cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return cfg.override(overrides or [])

    def to_yaml(self, path=None) -> str:
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:  # atomically: --resume --epochs rewrites the config of a run that must stay resumable
            from .training.checkpoint import atomic_write_text

            atomic_write_text(path, text)
        return text

    def override(self, assignments: list[str]) -> "TrainConfig":
        """A copy with ``section.key=value`` assignments applied (values parsed as YAML scalars/lists)."""
        import yaml

        d = self.to_dict()
        for a in assignments:
            if not isinstance(a, str) or "=" not in a:
                raise ValueError(f"--set: expected section.key=value, got {a!r}")
            key, raw = a.split("=", 1)
            key = key.strip()
            parts = key.split(".")
            if parts[0] not in SECTIONS or len(parts) < 2:
                raise ValueError(f"unknown config key {key!r}; keys look like section.key with section one of: "
                                 + ", ".join(SECTIONS))
            sec_cls = SECTIONS[parts[0]]
            valid = [f.name for f in dataclasses.fields(sec_cls)]
            if parts[1] not in valid:
                raise ValueError(f"unknown config key {key!r}; valid keys of {parts[0]!r}: {', '.join(valid)}")
            try:
                value = yaml.safe_load(raw) if raw.strip() else None
            except yaml.YAMLError:
                value = raw
            target = d[parts[0]]
            if len(parts) == 2:
                target[parts[1]] = value
            else:  # into a mapping field, e.g. model.kwargs.channels=[16,32]
                if not isinstance(target[parts[1]], dict):
                    raise ValueError(f"config key '{parts[0]}.{parts[1]}' is not a mapping; cannot set {key!r}")
                node = target[parts[1]]
                for p in parts[2:-1]:
                    node = node.setdefault(p, {})
                node[parts[-1]] = value
        return TrainConfig.from_dict(d)


def _coerce(sec_cls, key, value, section):
    """YAML gives ints for floats (``lr: 1``) and lists for tuples; accept those, reject the rest."""
    hints = typing.get_type_hints(sec_cls)
    t = hints[key]
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if t is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except ValueError:
            _fail(f"{section}.{key}", value, "a number")
    if t is tuple and isinstance(value, list):
        return tuple(value)
    return value


class _DuplicateKey(ValueError):
    pass


def _unique_key_loader():
    """A safe YAML loader that refuses a mapping with the same key twice (plain YAML keeps the last one)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(f"key {key!r} appears twice (lines {seen[key]} and {line})")
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader reports it
                    continue
            return super().construct_mapping(node, deep=deep)

    return Loader


def load_config(path=None, overrides: list[str] | None = None) -> TrainConfig:
    """The default :class:`TrainConfig` or one read from ``path``, with ``overrides`` applied."""
    if path is None:
        return TrainConfig().override(overrides or [])
    return TrainConfig.from_yaml(path, overrides)
