"""Weights beyond the first layer: a unit's kernel over its input channels, and which layer's
output those input channels are.

``unit_kernel(model, layer, unit)`` gives the kernel slices of one output channel of the
convolution at ``layer`` (the layer itself, or the last convolution inside it) over the input
channels it reads (one group for a grouped or depthwise convolution), strongest first by their
L1 norm. ``input_layer`` finds the module whose output the convolution reads, so that those
input channels can be shown by their own top patches. The raw kernel is shown: a BatchNorm after
the convolution rescales each output channel and leaves the pattern over inputs unchanged.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> kernel = unit_kernel(net, "2", 1, count=2)
    >>> kernel.slices.shape, len(kernel.inputs)
    (torch.Size([2, 3, 3]), 2)
    >>> input_layer(net, "2", (3, 8, 8))
    '1'
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seethrough.core import model_device, run_scope
from seethrough.errors import InputError
from seethrough.trace import resolve_layer


@dataclass
class UnitKernel:
    """``slices`` ``(K, kh, kw)`` of the kernel of ``unit`` over input channels ``inputs``."""

    conv: str
    unit: int
    inputs: list[int]
    slices: torch.Tensor


def conv_at(model: nn.Module, layer: str) -> tuple[str, nn.Conv2d]:
    """The convolution at ``layer``: the module itself, or the last ``Conv2d`` inside it."""
    name, module = resolve_layer(model, layer)
    if isinstance(module, nn.Conv2d):
        return name, module
    inner = [(f"{name}.{n}" if n else name, m) for n, m in module.named_modules()
             if isinstance(m, nn.Conv2d)]
    if not inner:
        raise InputError(f"layer {layer!r} holds no Conv2d: name a convolution "
                         "(seethrough.layers(model) lists them)")
    return inner[-1]


def unit_kernel(model: nn.Module, layer: str, unit: int, *, count: int | None = 8) -> UnitKernel:
    """The kernel slices of output channel ``unit`` over its ``count`` strongest inputs."""
    name, conv = conv_at(model, layer)
    if not 0 <= unit < conv.out_channels:
        raise InputError(f"unit {unit} is out of range: {name} has {conv.out_channels} units")
    weight = conv.weight.detach().float().cpu()[unit]  # (in/groups, kh, kw)
    group = unit // (conv.out_channels // conv.groups)
    first = group * weight.shape[0]
    order = weight.abs().sum((1, 2)).argsort(descending=True, stable=True)
    order = order[:count] if count else order
    return UnitKernel(name, unit, [first + int(i) for i in order], weight[order])


def input_layer(model: nn.Module, layer: str, input_size: tuple[int, ...]) -> str | None:
    """The module whose output the convolution at ``layer`` reads (the last to write that
    tensor, so after an in-place ReLU, the ReLU); ``None`` when it reads the model's input."""
    name, conv = conv_at(model, layer)
    seen: list[tuple[str, int]] = []
    read: list[tuple[int, int]] = []  # (storage read, outputs recorded before it)
    handles = []

    def record(module_name):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                seen.append((module_name, output.untyped_storage().data_ptr()))
        return hook

    for module_name, module in model.named_modules():
        if module is conv:
            handles.append(module.register_forward_pre_hook(
                lambda _m, inputs: read.append((inputs[0].untyped_storage().data_ptr(), len(seen)))))
        elif module_name and not name.startswith(module_name + "."):
            handles.append(module.register_forward_hook(record(module_name)))
    try:
        with run_scope(model), torch.no_grad():
            model(torch.zeros(1, *input_size, device=model_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    if not read:
        raise InputError(f"{name} did not run for an input of size {tuple(input_size)}")
    pointer, before = read[0]
    writers = [module_name for module_name, written in seen[:before] if written == pointer]
    return writers[-1] if writers else None
