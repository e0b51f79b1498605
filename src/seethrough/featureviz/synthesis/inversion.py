"""Feature inversion (Mahendran & Vedaldi 2015): find an image whose features at a layer match.

Maximizes ``-||phi(x) - phi_0||^2 / ||phi_0||^2 - lambda_beta * TV^beta(x) / V^beta
- lambda_alpha * ||x - 0.5||_alpha^alpha / B^alpha`` with the paper's exponents beta = 2 and
alpha = 6, B = 0.5 (half the pixel range) and V = B / 6.5, on a decorrelated Fourier
parameterization (which regularizes further). Deep layers keep what the network needs, not the
pixels: the inversion shows what a layer has thrown away.

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> result = invert(net, torch.rand(1, 3, 32, 32), "layer1", steps=5)
    >>> result.images.shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Renderer, Visualization
from seethrough.progress import progress_bar
from seethrough.trace import capture


def inversion_objective(model: nn.Module, images: torch.Tensor, layer: str, *, tv_weight: float = 0.05,
                        beta: float = 2.0, alpha_weight: float = 1e-3, alpha: float = 6.0,
                        bound: float = 0.5) -> obj.Objective:
    """The objective ``invert`` maximizes; its first term alone is ``obj.feature_match``."""
    target = capture(model, images, layer)[layer].output
    variation = bound / 6.5
    return (obj.feature_match(layer, target)
            - (tv_weight / variation ** beta) * obj.total_variation(beta)
            - (alpha_weight / bound ** alpha) * obj.alpha_norm(alpha))


def invert(model: nn.Module, images: torch.Tensor, layer: str, *, steps: int = 200, lr: float = 0.05,
           tv_weight: float = 0.05, alpha_weight: float = 1e-3, param: str = "fourier",
           transforms="none", seed: int = 0, progress: bool | None = None) -> Visualization:
    """Images (one per input) reconstructed from their features at ``layer``.

    The result's ``history`` holds the whole objective; ``feature_loss(model, layer, x, images)``
    gives the normalized feature distance alone.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"invert needs (N, 3, H, W) images in [0, 1], got {tuple(images.shape)}")
    objective = inversion_objective(model, images, layer, tv_weight=tv_weight, alpha_weight=alpha_weight)
    renderer = Renderer(model, objective, size=tuple(images.shape[-2:]), batch=images.shape[0],
                        seed=seed, param=param, transforms=transforms, lr=lr, redirect_relu_steps=0)
    with renderer:
        for _ in progress_bar(range(steps), "invert", progress=progress, unit="step"):
            renderer.step()
    return Visualization(renderer.images(), renderer.history, objective.description,
                         {"layer": layer, "steps": steps, "tv_weight": tv_weight,
                          "alpha_weight": alpha_weight})


def feature_loss(model: nn.Module, layer: str, images: torch.Tensor, target_images: torch.Tensor) -> torch.Tensor:
    """``||phi(x) - phi_0||^2 / ||phi_0||^2`` per item."""
    got = capture(model, images, layer)[layer].output
    target = capture(model, target_images, layer)[layer].output
    return (got - target).flatten(1).pow(2).sum(1) / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
