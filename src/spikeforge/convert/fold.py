r"""Fold every BatchNorm into the convolution or linear layer that feeds it.

For a layer :math:`z = W x + b` followed by BatchNorm in eval mode,
:math:`y = \gamma s \frac{z - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta` (:math:`s = \alpha V_{th}` for
:class:`~spikeforge.layers.TdBN`, 1 otherwise), the folded layer is

.. math::
    W' = W \cdot \frac{\gamma s}{\sqrt{\sigma^2 + \epsilon}},\qquad
    b' = (b - \mu)\,\frac{\gamma s}{\sqrt{\sigma^2 + \epsilon}} + \beta

(per output channel), and the BatchNorm becomes ``nn.Identity``.  The result equals the original in eval mode
(running statistics) to float rounding.

Which layer feeds a BatchNorm: inside an ``nn.Sequential`` / :class:`~spikeforge.layers.TimeFold` the layer just
before it; inside a spikeforge zoo model (whose code applies ``conv -> norm`` in registration order) the previously
registered sibling; any other module is traced with ``torch.fx`` and the BatchNorm's graph input must be a
convolution or linear call used by nothing else.  A BatchNorm that matches none of these (per-time-step
statistics, a BN after an addition, a conv output used twice) raises one ``ValueError`` naming it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from spikeforge.convert import fold_batchnorm
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> with torch.no_grad():
    ...     _ = net[1].running_mean.uniform_(-1, 1), net[1].running_var.uniform_(0.5, 2)
    >>> folded = fold_batchnorm(net)
    >>> folded[1]
    Identity()
    >>> x = torch.rand(2, 1, 8, 8)
    >>> bool(torch.allclose(folded(x), net(x), atol=1e-5))
    True
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..layers import TimeFold
from ..layers.norm import BNTT, TEBN, TdBN

#: BatchNorm types that fold (running statistics shared by every step)
FOLDABLE_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, TdBN)
#: norms that do not fold into one time-invariant layer (per-step statistics or scales)
UNFOLDABLE_BN = (BNTT, TEBN)
#: layers a BatchNorm folds into
FOLD_TARGETS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _is_bn(m) -> bool:
    return isinstance(m, FOLDABLE_BN + UNFOLDABLE_BN) or (isinstance(m, TimeFold) and _is_bn(m.layer))


def _inner_bn(m):
    return m.layer if isinstance(m, TimeFold) and not isinstance(m.layer, nn.Sequential) else m


def _last_target(m):
    """The conv/linear a module ends with (itself, a TimeFold's layer, a Sequential's last child), else None."""
    if isinstance(m, FOLD_TARGETS):
        return m
    if isinstance(m, TimeFold):
        return _last_target(m.layer)
    if isinstance(m, nn.Sequential) and len(m):
        return _last_target(m[len(m) - 1])
    return None


def _bn_scale_shift(bn):
    """``(scale, shift)`` per channel with ``bn(z) == z * scale + shift`` in eval mode."""
    var, mean = bn.running_var, bn.running_mean
    if var is None or mean is None:
        return None
    inv = torch.rsqrt(var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(inv)
    if isinstance(bn, TdBN):
        gamma = gamma * (bn.alpha * bn.v_th)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(inv)
    scale = gamma * inv
    return scale, beta - mean.double() * scale


def _fold_into(layer, bn, name: str) -> None:
    if isinstance(bn, UNFOLDABLE_BN):
        raise ValueError(f"fold_batchnorm: {type(bn).__name__} at {name} keeps per-time-step statistics or scales, "
                         "which no single convolution can hold; build the ANN with norm='bn' (or 'tdbn')")
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if bn.num_features != out:
        raise ValueError(f"fold_batchnorm: {type(bn).__name__} at {name} has {bn.num_features} features but the "
                         f"layer before it has {out} outputs; it does not normalise that layer")
    ss = _bn_scale_shift(bn)
    if ss is None:
        raise ValueError(f"fold_batchnorm: {type(bn).__name__} at {name} has no running statistics "
                         "(track_running_stats=False); there is nothing to fold")
    scale, shift = ss
    w = layer.weight
    with torch.no_grad():
        b = layer.bias.double() if layer.bias is not None else torch.zeros(out, dtype=torch.float64,
                                                                           device=w.device)
        new_w = (w.double() * scale.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
        new_b = (b * scale + shift).to(w.dtype)
        layer.weight = nn.Parameter(new_w, requires_grad=w.requires_grad)
        layer.bias = nn.Parameter(new_b, requires_grad=w.requires_grad)


def _fold_structural(module: nn.Module, prefix: str, trust_order: bool) -> None:
    """Fold BNs that follow their layer in a Sequential/TimeFold (or, when ``trust_order``, in registration order)."""
    ordered = isinstance(module, (nn.Sequential, TimeFold)) or trust_order
    prev_name, prev = None, None
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        path = f"{prefix}.{name}" if prefix else name
        if ordered and _is_bn(child) and prev is not None and _last_target(prev) is not None:
            _fold_into(_last_target(prev), _inner_bn(child), path)
            module._modules[name] = nn.Identity()
            prev_name, prev = name, None
            continue
        if isinstance(child, TimeFold) and isinstance(child.layer, nn.Sequential):
            _fold_structural(child.layer, path + ".layer", True)
        else:
            _fold_structural(child, path, _is_zoo(child))
        prev_name, prev = name, child
    del prev_name


def _is_zoo(m: nn.Module) -> bool:
    return type(m).__module__.startswith("spikeforge.")


def _remaining(model: nn.Module):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FOLDABLE_BN + UNFOLDABLE_BN)]


def _fold_fx(model: nn.Module) -> nn.Module:
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # tracing errors are many types; report the first BN and why
        name = _remaining(model)[0][0]
        raise ValueError(f"fold_batchnorm: cannot tell which layer feeds the BatchNorm at {name}: the model is "
                         f"not an nn.Sequential and torch.fx cannot trace it ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    mods = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(mods[node.target], FOLDABLE_BN + UNFOLDABLE_BN):
            continue
        src = node.args[0] if node.args else None
        ok = (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(mods.get(src.target), FOLD_TARGETS)
              and len(src.users) == 1)
        if not ok:
            what = "an input used elsewhere too" if isinstance(src, fx.Node) and len(src.users) > 1 else \
                f"{getattr(src, 'op', 'a constant')} {getattr(src, 'target', src)!s}"
            raise ValueError(f"fold_batchnorm: BatchNorm {node.target} cannot be folded: its input is {what}, not "
                             "the output of a convolution or linear layer used only by it")
        _fold_into(mods[src.target], mods[node.target], node.target)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BatchNorm folded into the layer before it (module docstring).  The copy is
    in eval mode; ``model`` is not changed."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model).eval()
    zoo = _is_zoo(out)
    _fold_structural(out, "", zoo)
    left = _remaining(out)
    if not left:
        return out
    if zoo or isinstance(out, nn.Sequential) and all(_is_zoo(m) or type(m).__module__.startswith("torch.nn")
                                                    for m in out.modules()):
        name, bn = left[0]
        raise ValueError(f"fold_batchnorm: {type(bn).__name__} at {name} does not directly follow a convolution or "
                         "linear layer, so it cannot be folded")
    return _fold_fx(out).eval()


__all__ = ["fold_batchnorm", "FOLDABLE_BN", "UNFOLDABLE_BN", "FOLD_TARGETS"]
