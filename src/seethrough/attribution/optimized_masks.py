"""Learned masks: meaningful perturbation (here) and extremal perturbation (``extremal``).

Both learn, per image, a smooth low-resolution mask by gradient descent on the model's score of
the image blended with blurred copies (meaningful perturbation: ``x * m + blur(x) * (1 - m)``;
extremal perturbation: a blur pyramid, see ``seethrough.attribution.extremal``). The images of
a chunk of ``batch_size`` are optimized together (their masks are independent; run the model in
eval mode so batch norm does not mix them). Sizes given in pixels at 224 (blur sigma, mask
step) are scaled by ``min(H, W) / 224`` so the defaults fit small images too.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> meaningful_perturbation(model, torch.rand(1, 3, 64, 64), 0, iterations=3).raw.shape
    torch.Size([1, 1, 28, 28])
"""
from __future__ import annotations

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


# Extremal perturbation lives in its own module; registered after meaningful perturbation so
# the registry keeps its order, and importable from here as before.
from seethrough.attribution.extremal import extremal_perturbation  # noqa: F401
