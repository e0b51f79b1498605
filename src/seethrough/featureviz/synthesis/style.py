"""Neural style transfer (Gatys, Ecker & Bethge 2016): the content of one image in another's style.

Maximizes ``-content_weight * feature loss at the content layer - style_weight * Gram loss at
the style layers`` (both normalized by their targets, see ``objectives.feature_match`` and
``gram_match``), starting from the content image. Defaults: one content layer at half the
network's stages (conv4_2 in the paper's VGG) and five style layers over its first 2/3.

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> x = torch.rand(1, 3, 32, 32)
    >>> transfer_style(net, x, x, content_layer="layer2", style_layers=["layer1"], steps=2).images.shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core.layer_table import spread, stage_layers
from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Renderer, Visualization
from seethrough.featureviz.synthesis.texture import target_grams
from seethrough.progress import progress_bar
from seethrough.trace import capture


def transfer_style(model: nn.Module, content: torch.Tensor, style: torch.Tensor, *,
                   content_layer: str | None = None, style_layers: Sequence[str] | None = None,
                   content_weight: float = 1.0, style_weight: float = 10.0, steps: int = 200,
                   lr: float = 0.02, param: str = "pixel", seed: int = 0,
                   progress: bool | None = None) -> Visualization:
    """``content`` (N, 3, H, W) repainted with the style of ``style`` (1, 3, h, w)."""
    for name, image in (("content", content), ("style", style)):
        if image.dim() != 4 or image.shape[1] != 3:
            raise InputError(f"{name} must be (N, 3, H, W) in [0, 1], got {tuple(image.shape)}")
    stages = stage_layers(model, tuple(content.shape[1:]))
    content_layer = content_layer or stages[len(stages) // 2]
    style_layers = list(style_layers or spread(stages, 5, upto=2 / 3))
    if style.shape[-2:] != content.shape[-2:]:
        style = F.interpolate(style, size=content.shape[-2:], mode="bilinear", align_corners=False,
                              antialias=True)
    content_target = capture(model, content, content_layer)[content_layer].output
    grams = target_grams(model, style, style_layers)
    objective = (content_weight * obj.feature_match(content_layer, content_target)
                 + (style_weight / len(style_layers)) * sum(obj.gram_match(l, grams[l]) for l in style_layers))
    renderer = Renderer(model, objective, batch=content.shape[0], seed=seed, param=param,
                        transforms="none", lr=lr, redirect_relu_steps=0, init=content)
    with renderer:
        for _ in progress_bar(range(steps), "style", progress=progress, unit="step"):
            renderer.step()
    return Visualization(renderer.images(), renderer.history, objective.description,
                         {"content_layer": content_layer, "style_layers": style_layers,
                          "content_weight": content_weight, "style_weight": style_weight})
