"""Which layer a layer-based method looks at, and how its output becomes a spatial map.

``default_layer`` picks, without running the model, the last convolution-like block: the
outermost module (below the model itself) that contains the last ``Conv2d`` and no classifier
parts (``Linear``, ``Flatten``, adaptive pooling). That is ``layer4`` in a ResNet, ``features``
in VGG, DenseNet, MobileNet and EfficientNet. For a torchvision ``VisionTransformer`` it is
``encoder.layers.<last>.ln_1``: the tokens entering the last block (the last block's output
only reaches the head through the class token, so its patch tokens get no gradient).

``to_grid`` turns token outputs ``(N, T, D)`` into ``(N, D, g, g)``: leading extra tokens (the
class token) are dropped and the grid is inferred from the token count, unless ``grid=(h, w)``.

Example:
    >>> import torchvision
    >>> default_layer(torchvision.models.resnet18())
    'layer4'
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.errors import InputError

_CLASSIFIER_PARTS = (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def default_layer(model: nn.Module) -> str:
    """The name of the layer a CAM-style method uses when none is given (see module doc)."""
    import torchvision

    for name, module in model.named_modules():
        if isinstance(module, torchvision.models.VisionTransformer):
            last = list(module.encoder.layers.named_children())[-1][0]
            return ".".join(filter(None, [name, "encoder.layers", last, "ln_1"]))
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise InputError(
            "found no Conv2d in the model to pick a default layer: pass layer='dotted.name' "
            "(list names with seethrough.layers(model))"
        )
    modules = dict(model.named_modules())
    parts = convs[-1].split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if not any(isinstance(m, _CLASSIFIER_PARTS) for m in modules[name].modules()):
            return name
    return convs[-1]


def to_grid(activation: torch.Tensor, layer: str, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """A layer output as ``(N, C, h, w)``: conv maps as they are, tokens reshaped to a grid."""
    if activation.dim() == 4:
        return activation
    if activation.dim() != 3:
        raise InputError(
            f"layer {layer!r} outputs shape {tuple(activation.shape)}, which has no spatial "
            "layout: pick a layer with output (N, C, h, w) or tokens (N, T, D)"
        )
    count, tokens, width = activation.shape
    if grid is None:
        for extra in range(min(tokens, 9)):
            side = math.isqrt(tokens - extra)
            if side > 1 and side * side == tokens - extra:
                grid = (side, side)
                break
        else:
            raise InputError(
                f"cannot infer a square token grid from {tokens} tokens at layer {layer!r}: "
                "pass grid=(h, w)"
            )
    h, w = grid
    if h * w > tokens:
        raise InputError(f"grid {grid} needs {h * w} tokens; layer {layer!r} has {tokens}")
    patches = activation[:, tokens - h * w:]
    return patches.reshape(count, h, w, width).permute(0, 3, 1, 2)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, K, h, w)`` maps to ``size`` (no-op when already that size)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
