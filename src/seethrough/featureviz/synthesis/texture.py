"""Neural texture synthesis (Gatys, Ecker & Bethge 2015): match Gram matrices at several layers.

Maximizes ``-sum_l ||G_l(x) - G_l(t)||^2 / ||G_l(t)||^2`` (each layer normalized by its target, so
layers weigh equally; Gatys et al. use 1/(4 N_l^2 M_l^2) with per-layer weights) with
``G = F F^T / positions``. Default layers: five network stages spread over the first 2/3 of the
depth (conv1_1 ... pool4 in the paper's VGG).

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> out = synthesize_texture(net, torch.rand(1, 3, 32, 32), layers=["layer1"], steps=3)
    >>> out.images.shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seethrough.core.layer_table import spread, stage_layers
from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Renderer, Visualization
from seethrough.progress import progress_bar
from seethrough.trace import capture


def target_grams(model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Gram matrices (1, C, C) of the mean over ``images`` at each layer."""
    trace = capture(model, images, list(layers))
    return {layer: obj.gram(trace[layer].output).mean(0, keepdim=True) for layer in layers}


def texture_objective(model: nn.Module, images: torch.Tensor, layers: Sequence[str]) -> obj.Objective:
    grams = target_grams(model, images, layers)
    return sum(obj.gram_match(layer, grams[layer]) for layer in layers) / len(layers)


def default_texture_layers(model: nn.Module, input_shape) -> list[str]:
    return spread(stage_layers(model, input_shape), 5, upto=2 / 3)


def synthesize_texture(model: nn.Module, texture: torch.Tensor, *, layers: Sequence[str] | None = None,
                       size: int | tuple[int, int] | None = None, batch: int = 1, steps: int = 200,
                       lr: float = 0.05, param: str = "fourier", transforms="none", seed: int = 0,
                       progress: bool | None = None) -> Visualization:
    """New images with the texture statistics of ``texture`` (1, 3, H, W)."""
    if texture.dim() != 4 or texture.shape[1] != 3:
        raise InputError(f"texture needs a (1, 3, H, W) image in [0, 1], got {tuple(texture.shape)}")
    layers = list(layers or default_texture_layers(model, tuple(texture.shape[1:])))
    objective = texture_objective(model, texture, layers)
    renderer = Renderer(model, objective, size=size or tuple(texture.shape[-2:]), batch=batch, seed=seed,
                        param=param, transforms=transforms, lr=lr, redirect_relu_steps=0)
    with renderer:
        for _ in progress_bar(range(steps), "texture", progress=progress, unit="step"):
            renderer.step()
    return Visualization(renderer.images(), renderer.history, objective.description,
                         {"layers": layers, "steps": steps})
