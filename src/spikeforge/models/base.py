"""Shared pieces of every model: input handling (static or sequence) and neuron construction."""

from __future__ import annotations

import torch
from torch import nn

from ..encoding import ENCODERS


def make_neuron(neuron: str = "lif", neuron_kwargs: dict | None = None, **overrides) -> nn.Module:
    """A registered neuron module by name, with ``neuron_kwargs`` (and per-site ``overrides``)."""
    from ..neurons import NEURONS

    kw = dict(neuron_kwargs or {})
    kw.update(overrides)
    return NEURONS.create(neuron, **kw)


def check_frame_size(x_seq: torch.Tensor, input_size: int) -> None:
    """Raise a ValueError naming the layout when ``x_seq``'s last two dims are not ``input_size`` square."""
    if tuple(x_seq.shape[-2:]) != (input_size, input_size):
        raise ValueError(f"x: expected frames of {input_size}x{input_size} (input_size) in [T, B, C, H, W], "
                         f"got {tuple(x_seq.shape[-2:])}")


def channels_last_steps(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, H, W]`` with every step in channels-last memory order (values unchanged).  A sequence that
    repeats one step (stride 0 over time, the ``direct`` encoder's output) stays a repeat of one step."""
    if x_seq.dim() != 5:
        return x_seq
    T = x_seq.shape[0]
    if T > 1 and x_seq.stride(0) == 0:
        step = _channels_last_strides(x_seq[0].contiguous(memory_format=torch.channels_last))
        return step.unsqueeze(0).expand(T, *step.shape)
    return _channels_last_strides(x_seq.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3))


def _channels_last_strides(t: torch.Tensor) -> torch.Tensor:
    """``t`` (dense, channels-last order) with the canonical channels-last strides.  With one channel (or 1x1
    images) both memory orders are the same bytes, and torch keeps the C-order strides, which makes the first
    convolution choose its slower NCHW kernel and hand NCHW to the whole network; the canonical strides say
    channels-last (a view of the same memory)."""
    if not t.is_contiguous():
        return t
    C, H, W = t.shape[-3:]
    lead = t.shape[:-3]
    strides, n = [], C * H * W
    for d in reversed(lead):
        strides.insert(0, n)
        n *= d
    return t.as_strided(t.shape, (*strides, 1, W * C, C))


class SpikingModel(nn.Module):
    """Base of registered models.

    ``forward(x)`` accepts a static batch ``[B, C, H, W]`` (encoded to ``[T, B, C, H, W]`` by ``encoder``) or a
    time-major sequence ``[T, B, C, H, W]`` of exactly ``T`` steps (:meth:`check_steps`: a batch-major
    ``[B, T, ...]`` batch is refused, naming the fix); subclasses implement
    ``forward_seq(x_seq) -> [T, B, num_classes]``.

    Memory order: with ``channels_last`` (True for image models) the input sequence is put in channels-last
    order, one step at a time (:func:`channels_last_steps`); convolution, BatchNorm and pooling then run
    oneDNN's channels-last kernels (about 1.5-2x faster on CPU than the NCHW ones for these sizes) and every
    spikeforge neuron keeps that order (the fused kernels work in memory order).  Outputs and gradients are the
    same up to float rounding of the convolutions; parameters and checkpoints are unaffected.
    """

    channels_last = True

    def __init__(self, num_classes: int, in_channels: int, T: int = 4, encoder: str = "direct",
                 static_ndim: int = 4):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels: expected an integer >= 1, got {in_channels!r}")
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise ValueError(f"T: expected an integer >= 1, got {T!r}")
        if encoder not in ENCODERS:
            raise ValueError(f"encoder: unknown value {encoder!r}; available: {', '.join(ENCODERS.list())}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.T = T
        self.encoder = encoder
        self.static_ndim = static_ndim

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        nd = self.static_ndim
        layout = "[B, C, H, W]" if nd == 4 else f"[B, ...] with {nd} dims"
        if not torch.is_tensor(x) or x.dim() not in (nd, nd + 1):
            raise ValueError(
                f"x: expected a static batch {layout} or a sequence [T, {layout[1:]}, got shape "
                f"{tuple(getattr(x, 'shape', ()))}"
            )
        if x.dim() == nd + 1:
            self.check_steps(x, f"[T, {layout[1:]}")
        if not x.is_floating_point():
            x = x.float()
        ch = x.shape[1] if x.dim() == nd else x.shape[2]
        if nd >= 3 and ch != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} input channels (layout {layout} or [T, {layout[1:]}), "
                             f"got {ch} in shape {tuple(x.shape)}")
        if x.dim() == nd:
            x = ENCODERS.get(self.encoder).factory(x, self.T)
        if self.channels_last and nd == 4:
            x = channels_last_steps(x)
        return x

    def check_steps(self, x_seq: torch.Tensor, layout: str) -> None:
        """Raise a one-line ValueError unless ``x_seq`` is time-major with the model's ``T`` steps; a batch-major
        sequence (``shape[1] == T``) is named as such, with the fix.  Two integer comparisons when it is fine."""
        T = self.T
        if x_seq.shape[0] != T:
            got = tuple(x_seq.shape)
            if x_seq.shape[1] == T:
                raise ValueError(f"x: expected a time-major sequence {layout} with T={T}, got shape {got}, which "
                                 f"looks batch-major [B, T, ...]; pass x.transpose(0, 1)")
            raise ValueError(f"x: expected a sequence {layout} with T={T} steps (the model's T), got "
                             f"{x_seq.shape[0]} steps in shape {got}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_seq(self.to_sequence(x))

    def forward_seq(self, x_seq: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise TypeError(f"{type(self).__name__} must define forward_seq(x_seq)")
