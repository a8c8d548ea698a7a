"""``model.kwargs`` / ``model.neuron_kwargs`` are checked against the model's and the neuron's signatures: an
unknown name or a value of the wrong kind is one ValueError naming the config key.  Generic over both registries."""

import inspect

import pytest

from spikeforge.cli import main
from spikeforge.models import MODELS, create_model, list_models
from spikeforge.models.registry import _SET_BY_CREATE_MODEL
from spikeforge.neurons import NEURONS


def _options(factory, exclude=()):
    """The factory's keyword options with their defaults (no required ones, none of ``exclude``)."""
    return {n: p.default for n, p in inspect.signature(factory).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in exclude}


def _wrong(default):
    """A value a config file could hold that is not of the default's kind."""
    return 3 if isinstance(default, str) else "abc"


@pytest.mark.parametrize("name", list_models())
def test_unknown_model_kwarg_names_the_key_and_lists_the_valid_names(name):
    valid = _options(MODELS.get(name).factory, _SET_BY_CREATE_MODEL)
    with pytest.raises(ValueError) as e:
        create_model(name, chanels=3)
    msg = str(e.value)
    assert msg.startswith(f"model.kwargs.chanels: unknown option of model {name!r}; valid: ")
    assert msg.endswith(", ".join(valid)) and "\n" not in msg


@pytest.mark.parametrize("neuron", NEURONS.list())
def test_unknown_neuron_kwarg_names_the_key_and_lists_the_valid_names(neuron):
    valid = _options(NEURONS.get(neuron).factory)
    with pytest.raises(ValueError) as e:
        create_model("mlp", neuron=neuron, neuron_kwargs={"tua": 3.0})
    msg = str(e.value)
    assert msg.startswith(f"model.neuron_kwargs.tua: unknown option of neuron {neuron!r}; valid: ")
    assert msg.endswith(", ".join(valid)) and "\n" not in msg


@pytest.mark.parametrize("name", list_models())
def test_model_kwarg_of_the_wrong_kind_names_key_value_and_expected(name):
    opts = {k: d for k, d in _options(MODELS.get(name).factory, _SET_BY_CREATE_MODEL).items() if d is not None}
    assert opts
    for key, default in opts.items():
        bad = _wrong(default)
        with pytest.raises(ValueError, match=rf"^model\.kwargs\.{key}: expected .*\(default .*\), got "
                                             rf"{bad!r} \({type(bad).__name__}\)$"):
            create_model(name, **{key: bad})


@pytest.mark.parametrize("neuron", NEURONS.list())
def test_neuron_kwarg_of_the_wrong_kind_names_key_value_and_expected(neuron):
    opts = {k: d for k, d in _options(NEURONS.get(neuron).factory).items() if d is not None}
    for key, default in opts.items():
        bad = _wrong(default)
        with pytest.raises(ValueError, match=rf"^model\.neuron_kwargs\.{key}: expected .*, got "
                                             rf"{bad!r} \({type(bad).__name__}\)$"):
            create_model("mlp", neuron=neuron, neuron_kwargs={key: bad})


@pytest.mark.parametrize("name", list_models())
def test_every_model_default_passes_the_check(name):
    MODELS.check_kwargs(name, _options(MODELS.get(name).factory, _SET_BY_CREATE_MODEL), "model.kwargs",
                        exclude=_SET_BY_CREATE_MODEL)


@pytest.mark.parametrize("neuron", NEURONS.list())
def test_every_neuron_default_passes_the_check(neuron):
    NEURONS.check_kwargs(neuron, _options(NEURONS.get(neuron).factory), "model.neuron_kwargs")


def test_kinds_follow_annotation_and_default():
    from spikeforge.surrogate import get_surrogate

    import torch

    # ints for floats, None where the annotation allows it, lists for tuples; objects are left to the factory
    create_model("mlp", input_size=4, hidden=[8], neuron_kwargs={"tau": 2, "v_reset": None,
                                                                 "surrogate": get_surrogate("sigmoid"),
                                                                 "v_threshold": torch.tensor(0.5)})
    create_model("mlp", input_size=4, hidden=(8,), neuron="plif", neuron_kwargs={"num_channels": None})
    with pytest.raises(ValueError, match=r"^model\.kwargs\.channels: expected a list of integers"):
        create_model("convnet", channels=[4, "8"])
    with pytest.raises(ValueError, match=r"^model\.kwargs\.input_size: expected an integer .*got 16\.0"):
        create_model("convnet", input_size=16.0)
    with pytest.raises(ValueError, match=r"^model\.neuron_kwargs\.detach_reset: expected True or False"):
        create_model("convnet", neuron_kwargs={"detach_reset": 1})
    with pytest.raises(ValueError, match=r"^model\.neuron_kwargs\.num_channels: expected an integer or None"):
        create_model("convnet", neuron="plif", neuron_kwargs={"num_channels": "4"})
    with pytest.raises(ValueError, match=r"^model\.neuron_kwargs: expected a mapping"):
        create_model("convnet", neuron_kwargs=[("tau", 2.0)])


@pytest.mark.parametrize("setting,key", [
    ("model.kwargs.chanels=3", "model.kwargs.chanels: unknown option of model 'convnet'; valid: "),
    ("model.neuron_kwargs.tua=3", "model.neuron_kwargs.tua: unknown option of neuron 'lif'; valid: tau, "),
    ("model.kwargs.hidden=abc", "model.kwargs.hidden: expected an integer (default 0), got 'abc' (str)"),
    ("model.neuron_kwargs.tau=abc", "model.neuron_kwargs.tau: expected a number (default 2.0), got 'abc'"),
])
def test_cli_reports_a_bad_model_kwarg_in_one_line(tmp_path, capsys, setting, key):
    rc = main(["train", "--set", setting, "--set", "data.train_subset=32", "--epochs", "1", "--no-progress",
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith(f"spikeforge train: error: {key}") and "\n" not in err, err
