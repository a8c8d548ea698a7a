"""Every registered model x every registered neuron: forward + backward on a tiny input; input errors;
statelessness, DDP and torch.func.functional_call.  Generic: new models and neurons are picked up."""

import inspect
import os
import socket

import pytest
import torch

from spikeforge.models import MODELS, create_model, list_models
from spikeforge.neurons import NEURONS

T = 2


def fast_kwargs(neuron):
    """Tiny tensors: the plain-torch reference backend beats the fused kernels' per-call overhead (the fused
    backends are checked against the reference by the engine's own tests)."""
    params = inspect.signature(NEURONS.get(neuron).factory).parameters
    return {"backend": "reference"} if "backend" in params else {}


def tiny(name, neuron="lif", neuron_kwargs=None, **over):
    """A registered model at its tiny test config (registry meta ``tiny``) and a matching input."""
    meta = MODELS.get(name).meta
    if neuron_kwargs is None:
        neuron_kwargs = fast_kwargs(neuron)
    kw = dict(meta.get("tiny", {}))
    kw.update(over)
    c = meta.get("defaults", {}).get("in_channels", 3)
    kw.setdefault("in_channels", c)
    model = create_model(name, num_classes=meta.get("tiny_classes", 5), neuron=neuron,
                         neuron_kwargs=neuron_kwargs, T=T, **kw)
    shape = meta.get("tiny_input", (kw["in_channels"], 16, 16))
    return model, shape


def _misfit(model_name, neuron_name):
    """Why a neuron genuinely cannot be placed in a model, or None."""
    factory = NEURONS.get(neuron_name).factory
    required = [p.name for p in inspect.signature(factory).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name != "self"]
    if required:
        return f"neuron {neuron_name!r} needs per-site arguments {required} that a model cannot supply generically"
    if MODELS.get(model_name).meta.get("input") == "spike_times":
        return f"model {model_name!r} has its own spike-time neuron and no time axis (tests/methods/test_methods_*)"
    needs_step = MODELS.get(model_name).meta.get("needs_step", False)
    if needs_step and not callable(getattr(factory, "step", None)):
        return f"model {model_name!r} runs its neurons step by step and neuron {neuron_name!r} has no .step"
    return None


def _pair(m, n):
    # The deeper members of a family (registry meta ``heavy``) share every block with the shallow member, which
    # runs with every neuron in CI; their own pairs beyond LIF cost minutes on 2 cores and are marked slow.
    if MODELS.get(m).meta.get("heavy") and n != "lif":
        return pytest.param(m, n, id=f"{m}-{n}", marks=pytest.mark.slow)
    return pytest.param(m, n, id=f"{m}-{n}")


PAIRS = [_pair(m, n) for m in list_models() for n in NEURONS.list()]


@pytest.mark.parametrize("model_name,neuron_name", PAIRS)
def test_every_model_runs_forward_and_backward_with_every_neuron(model_name, neuron_name):
    why = _misfit(model_name, neuron_name)
    if why:
        pytest.skip(why)
    torch.manual_seed(0)
    model, shape = tiny(model_name, neuron_name)
    x = torch.rand(2, *shape)
    y = model(x)
    k = model.num_classes
    assert y.dim() == 3 and y.shape[1:] == (2, k), y.shape
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()   # a linear loss: non-zero upstream gradient even where y = 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no parameter received a gradient"
    # the sequence form [T, B, ...] is accepted too
    step_shape = MODELS.get(model_name).meta.get("tiny_step_input")
    x_seq = x.unsqueeze(0).expand(T, *x.shape) if step_shape is None else torch.rand(T, 2, *step_shape)
    y2 = model(x_seq)
    assert y2.shape == y.shape


@pytest.mark.parametrize("name", list_models())
def test_model_is_stateless_between_calls(name):
    torch.manual_seed(0)
    model, shape = tiny(name)
    x = torch.rand(2, *shape)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    model.train()
    # identical calls in train mode also agree (batch statistics; dropout seeded identically)
    torch.manual_seed(1)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list_models())
def test_functional_call_matches_module_call(name):
    torch.manual_seed(0)
    model, shape = tiny(name)
    model.eval()
    x = torch.rand(2, *shape)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    y_func = torch.func.functional_call(model, {**params, **buffers}, (x,))
    assert torch.equal(y_func, model(x))
    # changing a parameter through functional_call changes the output without touching the module
    name0, p0 = next(iter(params.items()))
    shifted = {**params, name0: p0 + 0.5}
    y_shift = torch.func.functional_call(model, {**shifted, **buffers}, (x,))
    assert y_shift.shape == y_func.shape


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_models_work_under_distributed_data_parallel():
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    own = not dist.is_initialized()
    if own:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
        dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        for name in ("sew_resnet18", "ms_resnet18", "convnet"):
            torch.manual_seed(0)
            model, shape = tiny(name)
            ref = create_model(name, num_classes=model.num_classes, T=T, neuron_kwargs=fast_kwargs("lif"),
                               **{**MODELS.get(name).meta.get("tiny", {}), "in_channels": shape[0]})
            ref.load_state_dict(model.state_dict())
            ddp = DDP(model)
            x = torch.rand(2, *shape)
            y = ddp(x)
            y.sum().backward()
            y_ref = ref(x)
            y_ref.sum().backward()
            assert torch.allclose(y, y_ref, atol=1e-6)
            for (n1, p1), (_, p2) in zip(model.named_parameters(), ref.named_parameters()):
                if p2.grad is not None:
                    assert torch.allclose(p1.grad, p2.grad, atol=1e-5), n1
    finally:
        if own:
            dist.destroy_process_group()


def test_unknown_model_and_neuron_names_list_the_available_ones():
    with pytest.raises(ValueError, match="available: .*sew_resnet18"):
        create_model("resnet9000")
    with pytest.raises(ValueError, match="available: .*lif"):
        create_model("sew_resnet18", neuron="hodgkin")


@pytest.mark.parametrize("name", [n for n in list_models() if "tiny_step_input" not in MODELS.get(n).meta])
def test_wrong_input_dims_or_channels_name_the_layout(name):
    model, shape = tiny(name)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.rand(*shape))                         # no batch axis
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.rand(1, 1, 2, *shape))                # too many dims
    bad = (shape[0] + 1, *shape[1:])
    with pytest.raises(ValueError, match=rf"expected {shape[0]} input channels"):
        model(torch.rand(2, *bad))


@pytest.mark.parametrize("name", [n for n in list_models() if MODELS.get(n).meta.get("input") != "spike_times"])
def test_sequence_must_be_time_major_with_the_models_T(name):
    """A model built for T steps refuses another number of steps, and names a batch-major batch and its fix."""
    model, shape = tiny(name)
    step = MODELS.get(name).meta.get("tiny_step_input", shape)
    with pytest.raises(ValueError, match=rf"T={T} steps .*got {T + 1} steps") as e:
        model(torch.rand(T + 1, 5, *step))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"batch-major \[B, T, \.\.\.\]; pass x\.transpose\(0, 1\)") as e:
        model(torch.rand(5, T, *step))                    # a DataLoader batch [B, T, ...]
    assert "\n" not in str(e.value) and f"{(5, T, *step)}" in str(e.value)


def test_layout_examples_from_the_issue():
    """nmnist_net(T=10) fed a batch-major [4, 10, 2, 34, 34] batch; convnet(T=4) fed 6 steps."""
    net = create_model("nmnist_net", num_classes=10, in_channels=2, T=10, channels=4, hidden=8)
    with pytest.raises(ValueError, match=r"^x: expected a time-major sequence \[T, B, C, H, W\] with T=10, got "
                                         r"shape \(4, 10, 2, 34, 34\), which looks batch-major"):
        net(torch.rand(4, 10, 2, 34, 34))
    assert net(torch.rand(10, 4, 2, 34, 34)).shape == (10, 4, 10)
    net = create_model("convnet", T=4, input_size=16, channels=(4,))
    with pytest.raises(ValueError, match=r"T=4 steps \(the model's T\), got 6 steps in shape \(6, 2, 1, 16, 16\)"):
        net(torch.rand(6, 2, 1, 16, 16))
    assert net(torch.rand(2, 1, 16, 16)).shape == (4, 2, 10)          # a static batch is still direct-coded
