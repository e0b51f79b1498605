"""Pick default layers for synthesis: the stages of a network, shallow to deep.

Example:
    >>> import torchvision
    >>> stage_layers(torchvision.models.resnet18(), (3, 64, 64))[-2:]
    ['layer3', 'layer4']
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.core import model_device, run_scope
from seethrough.trace import Trace


def stage_layers(model: nn.Module, input_shape: tuple[int, int, int] | None = None) -> list[str]:
    """Names of the children of the container holding the most 4D-output children, in run order.

    For MobileNetV2 these are ``net.features.0`` ... ``net.features.18``; for a ResNet
    ``conv1`` ... ``layer4`` (without the ReLU/pool/norm modules, which add nothing new).
    """
    input_shape = input_shape or tuple(getattr(model, "input_size", (3, 224, 224)))
    best: list[str] = []
    for name, container in model.named_modules():
        children = [f"{name}.{child}" if name else child for child, module in container.named_children()
                    if any(isinstance(m, nn.Conv2d) for m in module.modules())]
        if len(children) > len(best):
            best = children
    if not best:
        return []
    with torch.no_grad(), run_scope(model, mode="eval"), Trace(model, best, stop=True) as trace:
        model(torch.rand((1,) + tuple(input_shape), device=model_device(model)))
    return [name for name in best if trace[name].outputs and trace[name].output.dim() == 4]


def spread(names: list[str], count: int, *, upto: float = 1.0) -> list[str]:
    """``count`` names evenly spread over the first ``upto`` fraction of ``names``."""
    pool = names[: max(1, round(len(names) * upto))]
    if count >= len(pool):
        return pool
    step = (len(pool) - 1) / max(1, count - 1)
    return [pool[round(i * step)] for i in range(count)]
