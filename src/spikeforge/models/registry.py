"""The model registry: each model family registers its entry points at the bottom of its own file."""

from __future__ import annotations

from .._registry import Registry

MODELS = Registry("model")
_SET_BY_CREATE_MODEL = ("num_classes", "in_channels", "neuron", "neuron_kwargs", "T")  # not model.kwargs


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, neuron: str = "lif",
                 neuron_kwargs: dict | None = None, T: int = 4, channels_last: bool | None = None, **kwargs):
    """Build a registered model, e.g. ``create_model("convnet", num_classes=10, in_channels=1, T=4)``.

    Every model takes a static batch ``[B, C, H, W]`` (encoded inside, direct coding by default) or a
    sequence ``[T, B, C, H, W]``, and returns per-step outputs ``[T, B, num_classes]``.  ``channels_last``
    (default: the model's own choice, True for conv nets) runs the image path in channels-last memory order,
    which is up to 2x faster for convolution, BatchNorm and pooling on CPU (see :class:`SpikingModel`).

    ``kwargs`` and ``neuron_kwargs`` are checked against the model's and the neuron's signatures first: an
    unknown name or a value of the wrong kind raises one ValueError naming ``model.kwargs.<name>`` or
    ``model.neuron_kwargs.<name>`` (the config keys) and listing the valid names or the expected kind.
    """
    from ..neurons import NEURONS

    if neuron not in NEURONS:
        raise ValueError(f"neuron: unknown value {neuron!r}; available: {', '.join(NEURONS.list())}")
    if channels_last is not None and not isinstance(channels_last, bool):
        raise ValueError(f"channels_last: expected True, False or None, got {channels_last!r}")
    if neuron_kwargs is not None and not isinstance(neuron_kwargs, dict):
        raise ValueError(f"model.neuron_kwargs: expected a mapping, got {neuron_kwargs!r}")
    MODELS.check_kwargs(name, kwargs, "model.kwargs", exclude=_SET_BY_CREATE_MODEL)
    NEURONS.check_kwargs(neuron, neuron_kwargs or {}, "model.neuron_kwargs")
    try:
        model = MODELS.create(name, num_classes=num_classes, in_channels=in_channels, neuron=neuron,
                              neuron_kwargs=neuron_kwargs, T=T, **kwargs)
    except ValueError as e:  # a value the model or neuron refuses ("v_threshold: got -1; ..."): name the config key
        msg = str(e)
        for section, given in (("model.neuron_kwargs", neuron_kwargs or {}), ("model.kwargs", kwargs)):
            key = next((k for k in given if msg.startswith(f"{k}:")), None)
            if key is not None:
                raise ValueError(f"{section}.{msg}") from e
        raise
    except (RuntimeError, TypeError) as e:  # e.g. a negative size reaching a torch layer
        given = ", ".join(f"{k}={v!r}" for k, v in {**kwargs, **(neuron_kwargs or {})}.items()) or "its defaults"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"model.kwargs: model {name!r} cannot be built with {given} ({first})") from e
    if channels_last is not None:
        model.channels_last = channels_last
    return model


def list_models() -> list[str]:
    return MODELS.list()
