"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, guided Grad-CAM.

All weigh the channels of one layer's activation ``A`` (N, K, h, w) and sum them; the result
(``raw``, at layer resolution) is upsampled bilinearly to the input (``maps``). The layer is
``layer=`` (a dotted name, or a unique suffix of one) or ``default_layer(model)``: the last
conv block (``layer4`` of a ResNet, ``features`` of VGG / DenseNet / MobileNet) or, for a
torchvision VisionTransformer, the tokens entering the last block, reshaped to their grid
(class token dropped, ``grid=(h, w)`` to override the inferred square grid).

One pass per chunk through ``core.layer_gradients``: the forward runs without autograd up to
the layer, and one backward from the summed target scores stops there.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> gradcam(model, torch.rand(2, 3, 64, 64), target=[0, 3]).raw.shape
    torch.Size([2, 1, 2, 2])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution.gradients import abs_max, input_gradients
from seethrough.attribution.layers import default_layer, to_grid, upsample
from seethrough.attribution.registry import inner, register
from seethrough.attribution.result import Attribution
from seethrough.core import Target, layer_gradients
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.trace import Trace, resolve_layer


def layer_name(model: nn.Module, layer: str | nn.Module | None) -> str:
    """The resolved dotted name of ``layer`` (default: ``default_layer(model)``)."""
    return resolve_layer(model, default_layer(model) if layer is None else layer)[0]


def activations_and_gradients(
    model: nn.Module, images: torch.Tensor, target: Target, layer: str, *,
    grid: tuple[int, int] | None, batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's activation and ``d score / d activation`` as spatial maps (N, K, h, w)."""
    acts, grads = layer_gradients(model, images, target, layer, batch_size=batch_size)
    return to_grid(acts, layer, grid), to_grid(grads, layer, grid)


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor, *, relu: bool) -> torch.Tensor:
    """``sum_k w_k A_k`` (N, 1, h, w), ReLU'd if asked."""
    cam = torch.einsum("nk,nkhw->nhw", weights, activations)[:, None]
    return cam.clamp(min=0) if relu else cam


def _result(cam: torch.Tensor, images: torch.Tensor, layer: str) -> Attribution:
    return Attribution(upsample(cam, images.shape[-2:]), raw=cam, options={"layer": layer})


@register("gradcam")
def gradcam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    relu: bool = True, grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k mean(dS/dA_k) A_k)``, any layer.

    The ReLU is the paper's (and pytorch-grad-cam's); Captum's ``LayerGradCam`` leaves it
    out by default: ``relu=False`` gives that signed map.
    """
    name = layer_name(model, layer)
    acts, grads = activations_and_gradients(model, images, target, name, grid=grid, batch_size=batch_size)
    return _result(weighted_sum(grads.mean((2, 3)), acts, relu=relu), images, name)


@register("gradcam_plus_plus")
def gradcam_plus_plus(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Grad-CAM++ (Chattopadhay et al. 2018): pixel-weighted positive gradients.

    With the exponential of the score, the paper's closed form uses only first derivatives:
    ``alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)``, ``w_k = sum_ij alpha_ij ReLU(g_ij)``, then
    ``ReLU(sum_k w_k A_k)`` (the same formula as pytorch-grad-cam).
    """
    name = layer_name(model, layer)
    acts, grads = activations_and_gradients(model, images, target, name, grid=grid, batch_size=batch_size)
    squared, cubed = grads**2, grads**3
    denominator = 2 * squared + acts.sum((2, 3), keepdim=True) * cubed
    alpha = torch.where(grads != 0, squared / torch.where(denominator != 0, denominator, 1.0), 0.0)
    weights = (alpha * grads.clamp(min=0)).sum((2, 3))
    return _result(weighted_sum(weights, acts, relu=True), images, name)


@register("guided_gradcam")
def guided_gradcam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop times the upsampled Grad-CAM.

    ``raw`` is the product per colour channel (the paper's image); ``maps`` its ``max_c |.|``.
    Two passes: Grad-CAM needs the ordinary ReLU backward, guided backprop the guided one.
    """
    cam = inner("gradcam")(model, images, target, layer=layer, grid=grid, batch_size=batch_size)
    guided = input_gradients(model, images, target, batch_size=batch_size, rule="guided")
    raw = guided * cam.maps
    return Attribution(abs_max(raw), raw=raw, options={"layer": cam.options["layer"]})


def final_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` registered in the model (the classifier of a GAP + linear net)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InputError("CAM needs a final nn.Linear classifier; this model has none: use gradcam")
    return linears[-1]


@register("cam")
def cam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Class activation mapping (Zhou et al. 2016): ``sum_k w_ck A_k`` with the classifier weights.

    Only for nets whose final linear layer is fed by global average pooling of ``layer`` (a
    ReLU in between is allowed, as in DenseNet): ResNet, DenseNet, ConceptNet. This is checked
    on the actual values, and other nets get a clear error (use ``gradcam``, which equals CAM
    up to a positive factor and a ReLU on such nets). Needs class targets. No backward pass.
    Signed (no ReLU), as in the paper.
    """
    if not target.is_class:
        raise InputError("CAM weighs channels by a class's classifier row: give class indices or "
                         "'predicted', or use gradcam for a target function or a unit")
    name = layer_name(model, layer)
    head_name, head = final_linear(model)
    maps = []
    for part in chunks(len(images), batch_size, desc="cam"):
        with torch.no_grad(), Trace(model, [name, head_name], retain_input=True) as trace:
            output = model(images[part])
            target.scores(output, part, clean=True)
        acts = to_grid(trace[name].output, name, grid)
        feed = trace[head_name].input
        rectified = None
        for candidate in (acts, acts.clamp(min=0)):
            pooled = candidate.mean((2, 3))
            if pooled.shape == feed.shape and torch.allclose(pooled, feed, rtol=1e-4, atol=1e-5):
                rectified = candidate
                break
        if rectified is None:
            raise InputError(
                f"CAM needs the final linear layer {head_name!r} to be fed by global average "
                f"pooling of layer {name!r} (a GAP + linear net such as ResNet or DenseNet); "
                "it is not here: use method='gradcam', which works for any layer"
            )
        weights = head.weight[target.classes[part].to(head.weight.device)]
        maps.append(weighted_sum(weights, rectified, relu=False))
    return _result(torch.cat(maps), images, name)
