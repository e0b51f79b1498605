"""The weights between units: ``circuit_weights(model, layer_a, layer_b)``.

For two adjacent convolutions the weights between their units are the second one's kernel. For
layers further apart they are the **expanded weights** (Olah et al. 2020, "Zoom In"; Voss et al.
2021, "Visualizing Weights"): the product of the linear maps on every path between the layers,
with activations taken as the identity and max pooling as average pooling (its linear map).
Residual sums and concatenations are followed as they are; paths that bypass ``layer_a`` add
nothing. Batch normalization in eval mode is affine, so its scale is part of the path; a
BatchNorm right after ``layer_b`` is folded in too (``fold_batchnorm``): the weights then end
at the normalized pre-activation, as a trained network's unit reads them.

All units are computed in one batched pass per ``chunk`` of ``layer_b``'s units: row ``j`` of the
batch backpropagates unit ``j`` at the centre of ``layer_b``'s grid to all of ``layer_a``, and the
result is cropped to that unit's receptive field in ``layer_a`` (its structural support, so zero
weights at a kernel's rim are kept). The probe input is enlarged until the field lies inside the
grid, so zero padding at the borders never cuts weights off.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1))
    >>> w = circuit_weights(net, "0", "2", input_size=(3, 8, 8))
    >>> w.shape, torch.allclose(w, net[2].weight)
    (torch.Size([5, 4, 3, 3]), True)
    >>> circuit_weights(net, "0", "2", input_size=(3, 8, 8), fold_batchnorm=False).shape
    torch.Size([5, 4, 3, 3])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seethrough.core import model_device, run_scope
from seethrough.errors import InputError
from seethrough.represent.receptive import LinearPath, positive_twin
from seethrough.trace import LayerSpec, Trace, resolve_layer

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: the largest probe image side tried before giving up on fitting a field inside the grid
MAX_PROBE = 2048


def circuit_weights(model: nn.Module, layer_a: LayerSpec, layer_b: LayerSpec, *,
                    fold_batchnorm: bool = True, input_size: Sequence[int] | None = None,
                    chunk: int = 64) -> torch.Tensor:
    """``(units_b, units_a, h, w)``: how each unit of ``layer_a`` drives each unit of ``layer_b``.

    Args:
        model: any ``nn.Module`` (left as it was).
        layer_a, layer_b: dotted names (or modules); ``layer_b`` comes after ``layer_a``.
        fold_batchnorm: if the module run right after ``layer_b`` is a BatchNorm of its output,
            end at that BatchNorm's output (its scale folded into the weights); see
            ``folded_batchnorm``.
        input_size: ``(C, H, W)`` of a probe image to start from (default: the model's
            ``input_size``, else ``(3, 224, 224)``); enlarged when a field does not fit.
        chunk: units of ``layer_b`` per batched pass.

    ``h, w`` is the receptive field of one ``layer_b`` position in ``layer_a``'s grid (for a
    ``layer_b`` without a grid, e.g. a ``Linear`` after global pooling, all of ``layer_a``'s grid
    at the probe size). The values are float32 on the model's device, detached.
    """
    name_a, _ = resolve_layer(model, layer_a)
    name_b, _ = resolve_layer(model, layer_b)
    if name_a == name_b:
        raise InputError(f"layer_a and layer_b are both {name_a!r}: give two different layers")
    size = tuple(int(v) for v in (input_size or getattr(model, "input_size", (3, 224, 224))))
    if len(size) != 3:
        raise InputError(f"input_size is (C, H, W), not {size}")
    with run_scope(model, mode="eval"):
        end = folded_batchnorm(model, name_b, size) if fold_batchnorm else None
        end = end or name_b
        while True:
            shape_a, shape_b = _shapes(model, name_a, end, size)
            box, whole = _field(model, name_a, end, size, shape_a, shape_b)
            if whole or not _touches_border(box, shape_a[-2:]):
                break
            if max(size[1:]) >= MAX_PROBE:
                raise InputError(f"the field of {end!r} in {name_a!r} does not fit in a "
                                 f"{size[1]}x{size[2]} probe: give a larger input_size")
            size = (size[0], size[1] * 2, size[2] * 2)
        rows = [_backward(model, name_a, end, size, units, shape_a, 0.0, LinearPath())
                for units in torch.arange(shape_b[0]).split(max(1, int(chunk)))]
    weights = torch.cat(rows)
    top, left, bottom, right = box
    return weights[..., top:bottom, left:right].float()


def folded_batchnorm(model: nn.Module, layer: LayerSpec,
                     input_size: Sequence[int] | None = None) -> str | None:
    """The name of the BatchNorm that normalizes ``layer``'s output, if one is run right on it.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        >>> folded_batchnorm(net, "0", (3, 8, 8))
        '1'
    """
    _, module = resolve_layer(model, layer)
    size = tuple(input_size or getattr(model, "input_size", (3, 224, 224)))
    output, found, handles = {}, [], []

    def keep(_module, _inputs, out):
        output["value"] = out

    def check(norm_name):
        def hook(_module, inputs):
            if not found and inputs and inputs[0] is output.get("value"):
                found.append(norm_name)
        return hook

    handles.append(module.register_forward_hook(keep))
    for norm_name, norm in model.named_modules():
        if isinstance(norm, BATCHNORMS):
            handles.append(norm.register_forward_pre_hook(check(norm_name)))
    try:
        with torch.no_grad(), run_scope(model, mode="eval"):
            model(torch.zeros(1, *size, device=model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def _shapes(model: nn.Module, name_a: str, name_b: str, size: tuple) -> tuple:
    """The per-image output shapes of the two layers at a probe size."""
    probe = torch.zeros(1, *size, device=model_device(model))
    with torch.no_grad(), Trace(model, [name_a, name_b], stop=True) as trace:
        model(probe)
    if trace[name_a].output is None or trace[name_b].output is None:
        raise InputError(f"layer {name_a!r} or {name_b!r} did not run in the forward pass")
    return tuple(trace[name_a].output.shape[1:]), tuple(trace[name_b].output.shape[1:])


def _centre(shape_b: tuple) -> tuple:
    """Index of the centre position of a ``(C, H, W)`` output (no position for ``(C,)``)."""
    return tuple(n // 2 for n in shape_b[1:])


def _backward(model: nn.Module, name_a: str, name_b: str, size: tuple, units: torch.Tensor,
              shape_a: tuple, value: float, mode: LinearPath) -> torch.Tensor:
    """Row ``j``: the gradient of unit ``units[j]`` at the centre of ``name_b`` with respect to
    ``name_a``'s whole output, through ``mode``'s linear path."""
    device = model_device(model)
    dtype = next(model.parameters(), torch.zeros(())).dtype
    start = torch.full((len(units), *shape_a), value, device=device, dtype=dtype,
                       requires_grad=True)
    images = torch.zeros(len(units), *size, device=device, dtype=dtype)
    with torch.enable_grad(), mode, Trace(model, [name_a, name_b], retain_grad=True, stop=True,
                                          edit={name_a: lambda _output: start.clone()}) as trace:
        model(images)
    output = trace[name_b].output
    index = (torch.arange(len(units)), units.to(device), *_centre(tuple(output.shape[1:])))
    if not output.requires_grad:
        raise InputError(f"layer {name_b!r} does not depend on {name_a!r}")
    (grad,) = torch.autograd.grad(output[index].sum(), start, allow_unused=True)
    if grad is None:
        raise InputError(f"layer {name_b!r} does not depend on {name_a!r}")
    return grad.detach()


def _field(model, name_a, name_b, size, shape_a, shape_b) -> tuple[tuple[int, int, int, int], bool]:
    """The box ``(top, left, bottom, right)`` of ``name_a`` positions that reach the centre
    unit of ``name_b`` on a positive copy of the model (its structural support), and whether
    ``name_b`` has no grid (then the box is the whole of ``name_a``'s grid)."""
    twin = positive_twin(model)
    grad = _backward(twin, name_a, name_b, size, torch.zeros(1, dtype=torch.long), shape_a, 1.0,
                     LinearPath(positive=True))
    support = grad[0].abs().sum(0) > 0 if grad.dim() == 4 else None
    if support is None:
        raise InputError(f"layer {name_a!r} has no (C, H, W) output: circuit weights are "
                         "between convolutional layers (or a conv layer and a later linear one)")
    if len(shape_b) < 3:
        return (0, 0, *support.shape), True
    ys, xs = support.any(1).nonzero(), support.any(0).nonzero()
    if not len(ys):
        raise InputError(f"layer {name_b!r} does not depend on {name_a!r}")
    return (int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1), False


def _touches_border(box: tuple[int, int, int, int], grid: Sequence[int]) -> bool:
    top, left, bottom, right = box
    return top == 0 or left == 0 or bottom == grid[0] or right == grid[1]
