"""Feed a model channels-last images on the CPU: the same numbers, often 15-40 % faster.

oneDNN's convolutions run fastest on NHWC ("channels last") tensors. PyTorch picks them when the
input is channels-last and every later activation keeps that layout, so converting the one input
tensor is enough; the model's weights are not touched. Outputs agree with the default layout to
float rounding. Gradients do too, except where a ReLU's input lies within rounding of 0: the two
layouts can then gate it differently, which moves an input gradient locally by a few % of its scale
(a random resnet18 at 64 px: one gate at 2.9e-7, 6.5 % of the saliency map's largest value; the
default layout happened to match float64 there). Neither is more right in float32; run the model in
float64 for gradients exact to rounding. A forward pass that calls ``.view`` on a 4-D activation
fails on channels-last strides: ``run_in_fast_layout`` then reruns the work with the input as given
and remembers that model, so it is tried only once.

Measured on 2 CPU cores (benchmarks/attribution.py): forward+backward of MobileNetV2 at 224 px
about 25 % faster, ConceptNet at 64 px about 20 %, resnet18 about 7 %. Inputs on a GPU are left
as given: on an H200 in float32, channels-last was 5-10 % slower (MobileNetV2 8.0 against 7.2
ms, resnet18 4.3 against 4.0 ms, batch 8).

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=3).eval()
    >>> run_in_fast_layout(model, lambda: model(torch.rand(1, 3, 64, 64))).shape
    torch.Size([1, 3])
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

Result = TypeVar("Result")

#: models whose forward pass failed on channels-last input
_REFUSED: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_LAYOUT_ERRORS = ("view size is not compatible", "must be contiguous", "is not contiguous")


def _channels_last(module: nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4 \
            and args[0].device.type == "cpu":
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def _is_layout_error(error: RuntimeError) -> bool:
    return any(text in str(error) for text in _LAYOUT_ERRORS)


def run_in_fast_layout(model: nn.Module, work: Callable[[], Result]) -> Result:
    """Run ``work()`` with every call of ``model`` getting its 4-D input channels-last.

    If that fails with a layout error (a ``.view`` in the model's forward), ``work()`` runs
    again with inputs as given, and the model is not tried channels-last again. ``work`` must
    be safe to repeat: it must not have changed anything outside itself before the failure.
    """
    if model in _REFUSED:
        return work()
    handle = model.register_forward_pre_hook(_channels_last)
    try:
        return work()
    except RuntimeError as error:
        if not _is_layout_error(error):
            raise
        _REFUSED.add(model)
    finally:
        handle.remove()
    return work()
