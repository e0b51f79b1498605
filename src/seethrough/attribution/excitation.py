"""Excitation backprop and its contrastive variant (Zhang et al. 2016), as TorchRay has them.

A top-down signal, the marginal winning probability (MWP), is passed from the target class
back to a layer with rules of its own instead of the gradient. The rules are TorchRay's
(``ExcitationBackpropContext``): while the method runs, ``F.conv1d/2d/3d``, ``F.linear``, the
average poolings and ``F.batch_norm`` are patched (process-wide, as ``relu_rules``; other
threads get the same rules while it runs) and the residual blocks of a torchvision ResNet use
an explicit element-wise sum (their ``forward`` set on the instance, as TorchRay's
``update_resnet``); all is put back on exit. ReLUs and max pools keep their gradient. Other
residual sums (MobileNet's) and products (squeeze-excitation gates) also keep their gradient,
as in TorchRay, so there the MWP is no longer a probability. Transformers are refused.

Versus TorchRay 1.0 (tests/attribution/test_propagation.py): equal to float rounding (correlation
> 0.9999) on a VGG with BatchNorm (both variants) and on a ResNet passed through its
``update_resnet``. Unlike TorchRay, a residual sum of exactly zero passes nothing back (TorchRay:
NaN), and the model is not switched to eval mode.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> excitation_backprop(model, torch.rand(2, 3, 64, 64), target=1).raw.shape
    torch.Size([2, 1, 2, 2])
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.attribution.layers import default_layer, to_grid, upsample
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.trace import resolve_layer


class _State(threading.local):
    active = False
    negate = None  # data_ptr of the classifier weight whose sign is flipped on the way back


_STATE = _State()
_TINY = 1e-20  # TorchRay's


def _linear_rule(function):
    """Conv / linear: ``p' = x * W+^T (p / (W+ x))`` (no bias), TorchRay's ``_patch_conv``."""

    class Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, *args):
            ctx.save_for_backward(x, weight)
            ctx.args, ctx.key = args, weight.data_ptr()
            return function(x, weight, bias, *args)

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            if _STATE.negate == ctx.key:
                weight = -weight
            with torch.enable_grad():
                leaf = x.detach().requires_grad_()
                out = function(leaf, weight.detach().clamp(min=0), None, *ctx.args)
                (back,) = torch.autograd.grad(out, leaf, grad / (out + _TINY))
            return (back * x, None, None) + (None,) * len(ctx.args)

    def patched(x, weight, bias=None, *args, **kwargs):
        if not _STATE.active or kwargs or not torch.is_grad_enabled():
            return function(x, weight, bias, *args, **kwargs)
        return Rule.apply(x, weight, bias, *args)

    return patched


def _pool_rule(function):
    """Average pools: ``p' = x * pool^T (p / pool(x))``, TorchRay's ``_patch_pool``."""

    class Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *args):
            ctx.save_for_backward(x)
            ctx.args = args
            return function(x, *args)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                leaf = x.detach().requires_grad_()
                out = function(leaf, *ctx.args)
                (back,) = torch.autograd.grad(out, leaf, grad / (out + _TINY))
            return (back * x,) + (None,) * len(ctx.args)

    def patched(x, *args, **kwargs):
        if not _STATE.active or kwargs or not torch.is_grad_enabled():
            return function(x, *args, **kwargs)
        return Rule.apply(x, *args)

    return patched


class _PassBack(torch.autograd.Function):
    """BatchNorm: the forward as it is, the signal passed back unchanged (TorchRay)."""

    @staticmethod
    def forward(ctx, x, function):
        return function(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _norm_rule(function):
    def patched(x, *args, **kwargs):
        if not _STATE.active or not torch.is_grad_enabled() or not x.requires_grad:
            return function(x, *args, **kwargs)
        return _PassBack.apply(x, lambda t: function(t, *args, **kwargs))

    return patched


class _EltwiseSum(torch.autograd.Function):
    """Residual sum: the signal split in proportion to the two branches (TorchRay)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a + b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        total = a + b
        share = torch.where(total != 0, grad / torch.where(total != 0, total, 1.0), 0.0)
        return a * share, b * share


def _block_forward(block, x):
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if hasattr(block, "conv3"):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    return block.relu(_EltwiseSum.apply(out, identity))


_PATCHED = ([(F, n, _linear_rule) for n in ("conv1d", "conv2d", "conv3d", "linear")]
            + [(F, n, _pool_rule) for n in ("avg_pool1d", "avg_pool2d", "avg_pool3d",
                                              "adaptive_avg_pool1d", "adaptive_avg_pool2d",
                                              "adaptive_avg_pool3d")]
            + [(F, "batch_norm", _norm_rule)])


@contextmanager
def excitation_rules(model: nn.Module):
    """Within the block, conv / linear / average-pool / BatchNorm (and ResNet residual sums of
    ``model``) backpropagate TorchRay's excitation-backprop rules; all is put back on exit."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in _PATCHED]
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))
              and "forward" not in m.__dict__]
    previous = _STATE.active
    try:
        for (owner, name, make), (_, _, original) in zip(_PATCHED, originals):
            setattr(owner, name, make(original))
        for block in blocks:
            block.forward = _block_forward.__get__(block)
        _STATE.active = True
        yield
    finally:
        _STATE.active, _STATE.negate = previous, None
        for block in blocks:
            block.__dict__.pop("forward", None)
        for owner, name, original in originals:
            setattr(owner, name, original)


def _classifier(model: nn.Module) -> nn.Module:
    """The last conv / linear layer that has weights (TorchRay's ``_get_classifier_layer``)."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]
    if not layers:
        raise InputError("excitation backprop needs a final linear or conv classifier layer")
    return layers[-1]


def _check_model(model: nn.Module) -> None:
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise InputError("excitation backprop's rules assume non-negative activations between "
                         "conv / linear layers (a CNN); this model has attention layers: use "
                         "gradcam, lrp or a gradient method")


def _excitation(model, images, target, layer, contrast_layer, *, contrastive, batch_size):
    _check_model(model)
    name, module = resolve_layer(model, default_layer(model) if layer is None else layer)
    top = _classifier(model) if contrast_layer is None else resolve_layer(model, contrast_layer)[1]
    maps = []
    with excitation_rules(model):
        for part in chunks(len(images), batch_size, desc="excitation backprop"):
            kept: dict[str, torch.Tensor] = {}

            def cut(mod, inputs, output, kept=kept):  # the saliency layer's output becomes a leaf
                torch.set_grad_enabled(True)
                kept["leaf"] = output.detach().requires_grad_()
                return kept["leaf"].clone()

            def contrast_at(mod, args, output=None, kept=kept):  # the contrast point: a graph cut as well
                value = args[0] if output is None else output
                if "leaf" not in kept or not isinstance(value, torch.Tensor):
                    return None
                kept["below"] = value
                kept["above"] = value.detach().requires_grad_()
                cloned = kept["above"].clone()
                return (cloned, *args[1:]) if output is None else cloned

            hooks = [module.register_forward_hook(cut)]
            if contrastive:
                hooks.append(top.register_forward_pre_hook(contrast_at) if contrast_layer is None
                             else top.register_forward_hook(contrast_at))
            try:
                with torch.no_grad():
                    score = target.scores(model(images[part]), part, clean=True).sum()
                    if "leaf" not in kept:
                        raise InputError(f"layer {name!r} did not run in the forward pass")
                    if not score.requires_grad:
                        raise InputError(f"the target score does not depend on layer {name!r}")
                    if contrastive:
                        if "above" not in kept:
                            raise InputError("the contrast layer must run after the saliency "
                                             f"layer {name!r}")
                        _STATE.negate = _classifier(model).weight.data_ptr()
                        try:
                            (dual,) = torch.autograd.grad(score, kept["above"], retain_graph=True)
                        finally:
                            _STATE.negate = None
                        (signal,) = torch.autograd.grad(score, kept["above"])
                        (grad,) = torch.autograd.grad(kept["below"], kept["leaf"], signal - dual)
                    else:
                        (grad,) = torch.autograd.grad(score, kept["leaf"])
            finally:
                for hook in hooks:
                    hook.remove()
            maps.append(to_grid(grad, name).sum(1, keepdim=True))
    raw = torch.cat(maps)
    return raw.clamp(min=0) if contrastive else raw, name


@register("excitation_backprop")
def excitation_backprop(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    batch_size: int = 32,
) -> Attribution:
    """Excitation backprop (Zhang et al. 2016): the marginal winning probability at ``layer``.

    A probability of 1 at the target class is passed down; every conv / linear layer hands it
    to its inputs in proportion to ``x_j * max(w_ij, 0)`` (biases ignored), average pools in
    proportion to their inputs, BatchNorms and ReLUs pass it on (TorchRay's rules), so with
    non-negative activations it stays non-negative and its total stays 1. ``layer``: where the
    map is read (TorchRay requires one; its examples use an intermediate VGG layer); default
    ``default_layer(model)``, the last conv block, as the CAMs. ``raw`` is the MWP summed over
    channels at layer resolution (TorchRay's map), ``maps`` it upsampled bilinearly.
    """
    raw, name = _excitation(model, images, target, layer, None, contrastive=False,
                            batch_size=batch_size)
    return Attribution(upsample(raw, images.shape[-2:]), raw=raw, options={"layer": name})


@register("contrastive_excitation_backprop")
def contrastive_excitation_backprop(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    contrast_layer: str | None = None, batch_size: int = 32,
) -> Attribution:
    """Contrastive excitation backprop (Zhang et al. 2016; TorchRay's implementation).

    The MWP of the target minus that of its "dual" (the classifier's weights negated) at the
    contrast point, passed down to ``layer`` with the excitation rules; ``raw`` is the positive
    part of its channel sum (TorchRay). ``layer`` as ``excitation_backprop``. TorchRay requires
    ``contrast_layer`` (a layer above ``layer``); the default ``None`` is the classifier's
    input, the layer just below the dual unit as in the paper.
    """
    raw, name = _excitation(model, images, target, layer, contrast_layer, contrastive=True,
                            batch_size=batch_size)
    return Attribution(upsample(raw, images.shape[-2:]), raw=raw, options={"layer": name})
