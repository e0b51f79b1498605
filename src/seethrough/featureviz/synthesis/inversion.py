"""Feature inversion (Mahendran & Vedaldi 2015, "Understanding deep image representations by
inverting them"): find an image whose features at a layer match.

``preset="paper"`` (the default) minimizes the paper's normalized objective

    ``||phi(x) - phi_0||^2 / ||phi_0||^2 + lambda_alpha R_alpha(x) + lambda_V R_V^beta(x)``

* ``R_alpha(x) = sum |x - mu|^alpha / (H W B^alpha)``, ``alpha = 6`` (``objectives.mv_alpha_norm``);
* ``R_V^beta(x) = sum ((dx)^2 + (dy)^2)^(beta/2) / (H W V^beta)``, ``beta = 2``
  (``objectives.mv_total_variation``);
* ``B = 80`` on the paper's mean-subtracted 0..255 images, so here ``B = 80/255`` around the
  ImageNet mean colour ``mu`` (our images are in [0, 1]; ``MV_BOUND``), ``V = B / 6.5``;
* ``lambda_V`` by depth and ``lambda_alpha``: the authors' code (aravindhm/deep-goggle,
  ``experiment_cnn.m``, ``invert_nn.m``) weighs ``lambdaTV / 2`` = 0.5, 5, 50 for AlexNet layers
  1-6, 7-12, 13-20 and ``lambdaL2 / 2`` = 4e-10, on unnormalized sums over 0..255 pixels divided
  by ``x0_sigma^2`` (a typical image's squared norm, taken here as ``H W B^2``). In the paper's
  normalization that is ``lambda_V = (lambdaTV / 2) (V / B)^2`` = 0.5 / 6.5^2, 5 / 6.5^2,
  50 / 6.5^2 = 0.0118, 0.118, 1.18 for the first, second and last third of the network's stages
  (``MV_LAMBDA_V``) and ``lambda_alpha = (lambdaL2 / 2) B^4 = 0.0164`` with ``B = 80``
  (``MV_LAMBDA_ALPHA``). The paper's own table of lambda values could not be checked here; taking
  0.5, 5, 50 as ``lambda_V`` directly in the normalized objective flattens the image (measured on
  MobileNetV2: the reconstruction's pixel std falls to 0.02);
* the paper's ``Phi(sigma x)`` rescaling is not applied (``sigma = 1``: our models take [0, 1]
  images and normalize them themselves);
* optimizer: gradient descent with momentum 0.9 on the pixels (``param="raw"``, start: the mean
  colour plus Gaussian noise of per-pixel norm ``V``; kept in [0, 1] by projection, which the
  paper does not need), the code's schedule ``0.004 x (1, 0.1, 0.01)`` over 1/4, 1/2, 1/4 of the
  steps (100, 200, 100 of 400), momentum reset when the rate changes; the code's step multiplies
  the gradient of the normalized objective by a typical image's squared norm (``x0_sigma^2``,
  taken here as ``H W B^2``: ``B`` is a typical pixel's norm), so the rate is ``0.004 H W B^2``
  on our [0, 1] pixels (``lr`` overrides that base; the code's ``x0_sigma`` is not verified).

``preset="fast"`` is the earlier default: the same terms as means over pixels and colours with
``B = 0.5`` around grey, ``tv_weight=0.05``, ``alpha_weight=1e-3``, on a decorrelated Fourier image
with Adam (lr 0.05): a smoother, faster reconstruction, not the paper's.

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> result = invert(net, torch.rand(1, 3, 32, 32), "layer1", steps=5)
    >>> result.images.shape, result.settings["preset"]
    (torch.Size([1, 3, 32, 32]), 'paper')
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.core.layer_table import stage_layers
from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.regularizers import IMAGENET_MEAN
from seethrough.featureviz.render import RawPixelParam, Renderer, Visualization
from seethrough.progress import progress_bar
from seethrough.trace import capture

MV_ALPHA = 6.0
MV_BETA = 2.0
MV_BOUND = 80.0 / 255.0  # B = 80 on 0..255 pixels
MV_VARIATION = MV_BOUND / 6.5  # V = B / 6.5
MV_LAMBDA_V = tuple(weight / 6.5 ** 2 for weight in (0.5, 5.0, 50.0))  # shallow, middle, deep third
MV_LAMBDA_ALPHA = 8e-10 / 2 * 80.0 ** 4  # = 0.0164, see the module docstring
MV_MOMENTUM = 0.9
MV_LR = 0.004
MV_SCHEDULE = ((0.25, 1.0), (0.5, 0.1), (0.25, 0.01))  # (fraction of the steps, lr factor)
MV_STEPS = 400


def layer_depth(model: nn.Module, layer: str, input_shape=None) -> float:
    """Where ``layer`` sits in the network, 0 (first stage) to 1 (last); by module order if it is
    not one of the stages."""
    stages = stage_layers(model, input_shape)
    names = [name for name, _ in model.named_modules() if name]
    if layer in stages and len(stages) > 1:
        return stages.index(layer) / (len(stages) - 1)
    if layer not in names:
        raise InputError(f"no layer {layer!r} in the model")
    return names.index(layer) / max(1, len(names) - 1)


def paper_tv_weight(depth: float) -> float:
    """``lambda_V``: (0.5, 5 or 50) / 6.5^2 for the first, second or last third of the depth."""
    return MV_LAMBDA_V[min(2, int(depth * 3))]


def inversion_objective(model: nn.Module, images: torch.Tensor, layer: str, *, tv_weight: float = 0.05,
                        beta: float = 2.0, alpha_weight: float = 1e-3, alpha: float = 6.0,
                        bound: float = 0.5, paper: bool = False) -> obj.Objective:
    """The objective ``invert`` maximizes (minus the loss); its first term is ``obj.feature_match``.

    ``paper=True``: Mahendran & Vedaldi's sums normalized by ``H W B^alpha`` and ``H W V^beta``
    around the ImageNet mean; else the fast preset's means around grey.
    """
    target = capture(model, images, layer)[layer].output
    variation = bound / 6.5
    if paper:
        return (obj.feature_match(layer, target)
                - tv_weight * obj.mv_total_variation(beta, variation=variation)
                - alpha_weight * obj.mv_alpha_norm(alpha, bound=bound, center=IMAGENET_MEAN))
    return (obj.feature_match(layer, target)
            - (tv_weight / variation ** beta) * obj.total_variation(beta)
            - (alpha_weight / bound ** alpha) * obj.alpha_norm(alpha))


def _schedule(steps: int) -> list[float]:
    """The lr factor of each step: ``MV_SCHEDULE`` stretched over ``steps``."""
    factors: list[float] = []
    for fraction, factor in MV_SCHEDULE:
        factors += [factor] * round(fraction * steps)
    factors = (factors + [MV_SCHEDULE[-1][1]] * steps)[:steps]
    return factors


def _paper_start(shape, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return (mean + torch.randn(shape, generator=generator) * MV_VARIATION / 3 ** 0.5).clamp(0, 1)


def _invert_paper(model, images, layer, steps, lr, tv_weight, alpha_weight, seed, progress):
    depth = layer_depth(model, layer, tuple(images.shape[1:]))
    tv_weight = paper_tv_weight(depth) if tv_weight is None else tv_weight
    alpha_weight = MV_LAMBDA_ALPHA if alpha_weight is None else alpha_weight
    objective = inversion_objective(model, images, layer, tv_weight=tv_weight, alpha_weight=alpha_weight,
                                    beta=MV_BETA, alpha=MV_ALPHA, bound=MV_BOUND, paper=True)
    height, width = images.shape[-2:]
    base = MV_LR * height * width * MV_BOUND ** 2 if lr is None else lr
    param = RawPixelParam(tuple(images.shape), seed=seed, device=images.device)
    param.set_image(_paper_start(tuple(images.shape), seed).to(images.device))
    renderer = Renderer(model, objective, seed=seed, param=param, transforms="none", lr=base,
                        optimizer=torch.optim.SGD, optimizer_options={"momentum": MV_MOMENTUM},
                        redirect_relu_steps=0)
    previous = None
    with renderer:
        for factor in progress_bar(_schedule(steps), "invert", progress=progress, unit="step"):
            if factor != previous:  # the authors' code resets the momentum when the rate changes
                renderer.optimizer.state.clear()
                for group in renderer.optimizer.param_groups:
                    group["lr"] = base * factor
                previous = factor
            renderer.step()
    return renderer, objective, {"tv_weight": tv_weight, "alpha_weight": alpha_weight, "lr": base,
                                 "depth": depth}


def invert(model: nn.Module, images: torch.Tensor, layer: str, *, steps: int | None = None,
           lr: float | None = None, tv_weight: float | None = None, alpha_weight: float | None = None,
           param: str = "fourier", transforms="none", seed: int = 0, progress: bool | None = None,
           preset: str = "paper") -> Visualization:
    """Images (one per input) reconstructed from their features at ``layer``.

    ``preset="paper"`` (400 steps) or ``"fast"`` (200 steps, uses ``param`` and ``transforms``).
    The result's ``history`` holds the whole objective; ``feature_loss(model, layer, x, images)``
    gives the normalized feature distance alone.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"invert needs (N, 3, H, W) images in [0, 1], got {tuple(images.shape)}")
    if preset == "paper":
        steps = MV_STEPS if steps is None else steps
        renderer, objective, used = _invert_paper(model, images, layer, steps, lr, tv_weight,
                                                  alpha_weight, seed, progress)
    elif preset == "fast":
        steps = 200 if steps is None else steps
        used = {"tv_weight": 0.05 if tv_weight is None else tv_weight,
                "alpha_weight": 1e-3 if alpha_weight is None else alpha_weight,
                "lr": 0.05 if lr is None else lr}
        objective = inversion_objective(model, images, layer, tv_weight=used["tv_weight"],
                                        alpha_weight=used["alpha_weight"])
        renderer = Renderer(model, objective, size=tuple(images.shape[-2:]), batch=images.shape[0],
                            seed=seed, param=param, transforms=transforms, lr=used["lr"],
                            redirect_relu_steps=0)
        with renderer:
            for _ in progress_bar(range(steps), "invert", progress=progress, unit="step"):
                renderer.step()
    else:
        raise InputError(f"preset is 'paper' or 'fast', not {preset!r}")
    return Visualization(renderer.images(), renderer.history, objective.description,
                         {"layer": layer, "steps": steps, "preset": preset, **used})


def feature_loss(model: nn.Module, layer: str, images: torch.Tensor, target_images: torch.Tensor) -> torch.Tensor:
    """``||phi(x) - phi_0||^2 / ||phi_0||^2`` per item."""
    got = capture(model, images, layer)[layer].output
    target = capture(model, target_images, layer)[layer].output
    return (got - target).flatten(1).pow(2).sum(1) / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
