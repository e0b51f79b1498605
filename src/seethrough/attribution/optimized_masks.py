"""Learned masks: meaningful perturbation and extremal perturbation.

Both learn, per image, a smooth low-resolution mask by gradient descent on the model's score of
the image blended with a blurred copy: ``x * m + blur(x) * (1 - m)``. The images of a chunk of
``batch_size`` are optimized together (their masks are independent; run the model in eval mode
so batch norm does not mix them). Sizes given in pixels at 224 (blur sigma, mask step) are
scaled by ``min(H, W) / 224`` so the defaults fit small images too.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> extremal_perturbation(model, torch.rand(1, 3, 64, 64), 0, iterations=3).raw.shape
    torch.Size([1, 1, 64, 64])
"""
from __future__ import annotations

import math

import torch
from torch import nn

from seethrough.attribution.layers import upsample
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target, gaussian_blur
from seethrough.core.batching import chunks
from seethrough.errors import InputError


def _scale(images: torch.Tensor) -> float:
    return min(images.shape[-2:]) / 224


def total_variation(mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Sum of ``|finite differences|^beta`` per image (Fong & Vedaldi's TV term)."""
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().pow(beta).flatten(1).sum(1)
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().pow(beta).flatten(1).sum(1)
    return dy + dx


@register("meaningful_perturbation")
def meaningful_perturbation(
    model: nn.Module, images: torch.Tensor, target: Target, *, iterations: int = 300,
    lr: float = 0.1, l1: float = 1e-4, tv: float = 1e-2, tv_beta: float = 3.0,
    mask_size: int = 28, blur_sigma: float = 10.0, batch_size: int = 32,
) -> Attribution:
    """Meaningful perturbation (Fong & Vedaldi 2017): the smallest blur that kills the score.

    Minimizes ``l1 * ||1 - m||_1 + tv * TV_beta(m) + p_c(x * M + blur(x) * (1 - M))`` over a
    ``mask_size x mask_size`` mask ``m`` in [0, 1] (1 = keep), upsampled bilinearly to ``M``,
    with Adam. Paper's values: lambda1 = 1e-4, lambda2 = 1e-2, beta = 3, 300 iterations,
    lr 0.1, a 28 x 28 mask (not scaled: a coarser mask lets the TV term win over L1; at most
    the image size), blur sigma 10 px at 224 (scaled), score = softmax probability of the target (a
    callable's value as it is). The norms are sums over the low-resolution mask. Left out: the
    paper's noise and jitter on the mask. ``maps`` (and ``raw``, low resolution) is ``1 - m``:
    what had to be deleted, i.e. the evidence.
    """
    if not isinstance(iterations, int) or iterations < 1:
        raise InputError(f"iterations must be a positive integer, not {iterations!r}")
    target.resolve(model, images, batch_size)
    side = min(mask_size, *images.shape[-2:])
    size = images.shape[-2:]
    deleted = []
    for part in chunks(len(images), batch_size, desc="meaningful perturbation"):
        x = images[part]
        blurred = gaussian_blur(x, blur_sigma * _scale(images))
        mask = torch.ones(len(x), 1, side, side, dtype=x.dtype, device=x.device, requires_grad=True)
        optimizer = torch.optim.Adam([mask], lr=lr)
        with torch.enable_grad():
            for _ in range(iterations):
                up = upsample(mask, size)
                score = target.scores(model(x * up + blurred * (1 - up)), part, probabilities=True)
                loss = l1 * (1 - mask).abs().flatten(1).sum(1) + tv * total_variation(mask, tv_beta) + score
                optimizer.zero_grad()
                loss.sum().backward()
                optimizer.step()
                with torch.no_grad():
                    mask.clamp_(0, 1)
        deleted.append(1 - mask.detach())
    raw = torch.cat(deleted)
    return Attribution(upsample(raw, size), raw=raw)


def _smooth_mask(parameters: torch.Tensor, size, sigma: float) -> torch.Tensor:
    """Low-resolution mask parameters in [0, 1] -> smooth full-resolution mask in [0, 1].

    No clamp here: the blur of values at the bounds can round to just outside [0, 1], and a
    clamp there would stop their gradients.
    """
    return gaussian_blur(upsample(parameters, size), sigma)


@register("extremal_perturbation")
def extremal_perturbation(
    model: nn.Module, images: torch.Tensor, target: Target, *, areas: tuple[float, ...] = (0.1,),
    variant: str = "preserve", iterations: int = 800, lr: float = 0.01, momentum: float = 0.9,
    regularization: float = 300.0, growth: float = 1.0035, step: int = 7, sigma: float = 21.0,
    blur_sigma: float = 20.0, jitter: bool = True, batch_size: int = 32,
) -> Attribution:
    """Extremal perturbation (Fong, Patrick & Vedaldi 2019): the best mask of a fixed area.

    For each area ``a``, learns a smooth mask that keeps (``variant="preserve"``: maximize the
    target logit of ``x * M + blur(x) * (1 - M)``) or removes (``"delete"``: minimize the
    logit of ``x * (1 - M) + blur(x) * M``) the most important fraction ``a`` of the image.
    The area is imposed by the paper's ranking loss ``||sort(M) - r_a||^2`` (``r_a``: ones on
    the top ``a`` fraction) with weight ``regularization`` growing by ``growth`` each step.
    Defaults are the paper's / TorchRay's: area 0.1, 800 iterations, SGD lr 0.01 with momentum
    and dampening 0.9, weight 300 x 1.0035^t, mask parameters every ``step = 7`` px, smoothing
    ``sigma = 21`` px, blur up to 20 px, horizontal flip jitter every other step. Pixel sizes
    are scaled by ``H / 224``. Simplified (documented): the smooth-max mask generator is a
    bilinear upsampling followed by a Gaussian blur, and the blur pyramid is one blurred image.
    ``raw`` is the mask per area (N, A, H, W); ``maps`` their mean (areas summed as in the
    paper's figures, divided by their number).
    """
    if variant not in ("preserve", "delete"):
        raise InputError(f"variant must be 'preserve' or 'delete', not {variant!r}")
    areas = (areas,) if isinstance(areas, float) else tuple(areas)
    if not areas or not all(0 < a < 1 for a in areas):
        raise InputError(f"areas must be fractions in (0, 1), not {areas!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise InputError(f"iterations must be a positive integer, not {iterations!r}")
    target.resolve(model, images, batch_size)
    scale = _scale(images)
    size = tuple(images.shape[-2:])
    grid = (max(2, math.ceil(size[0] / max(1.0, step * scale))), max(2, math.ceil(size[1] / max(1.0, step * scale))))
    pixels = size[0] * size[1]
    reference = torch.zeros(len(areas), pixels, dtype=images.dtype, device=images.device)
    for index, area in enumerate(areas):
        reference[index, int(pixels * (1 - area)):] = 1
    count = len(images) * len(areas)
    masks = []
    for part in chunks(count, batch_size, desc="extremal perturbation"):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image, area = pair // len(areas), pair % len(areas)
        x = images[image]
        blurred = gaussian_blur(x, blur_sigma * scale)
        # Start undecided at 0.5 (TorchRay too): from all ones, the ranking loss's tie-breaking,
        # not the evidence, decided which pixels were kept (measured: masks hugging the left edge).
        parameters = torch.full((len(x), 1, *grid), 0.5, dtype=x.dtype, device=x.device,
                                requires_grad=True)
        optimizer = torch.optim.SGD([parameters], lr=lr, momentum=momentum, dampening=momentum)
        weight = regularization
        with torch.enable_grad():
            for iteration in range(iterations):
                mask = _smooth_mask(parameters, size, sigma * scale)
                keep = mask if variant == "preserve" else 1 - mask
                perturbed = x * keep + blurred * (1 - keep)
                if jitter and iteration % 2 == 0:
                    perturbed = perturbed.flip(3)
                score = target.scores(model(perturbed), image)
                reward = score if variant == "preserve" else -score
                ranked = mask.flatten(1).sort(1).values
                penalty = ((ranked - reference[area]) ** 2).mean(1) * weight
                optimizer.zero_grad()
                (penalty - reward).sum().backward()
                optimizer.step()
                with torch.no_grad():
                    parameters.clamp_(0, 1)
                weight *= growth
        with torch.no_grad():
            masks.append(_smooth_mask(parameters, size, sigma * scale).clamp(0, 1))
    raw = torch.cat(masks).view(len(images), len(areas), *size)
    return Attribution(raw.mean(1, keepdim=True), raw=raw, options={"areas": areas})
