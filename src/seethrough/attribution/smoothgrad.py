"""SmoothGrad (Smilkov et al. 2017): average any method's maps over noisy copies of the image.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> smoothgrad(model, torch.rand(1, 3, 32, 32), 0, n_samples=4).maps.shape
    torch.Size([1, 1, 32, 32])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution.gradients import abs_max
from seethrough.attribution.registry import METHODS, inner, register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError

#: methods whose map is max_c |raw|: SmoothGrad averages their raw gradient first (the paper)
ABS_MAX = ("saliency", "guided_backprop", "deconvnet")
#: how the samples are combined: mean, mean of squares, variance
VARIANTS = ("smoothgrad", "squared", "vargrad")


def _combine(total: torch.Tensor, squares: torch.Tensor, n: int, variant: str) -> torch.Tensor:
    if variant == "smoothgrad":
        return total / n
    if variant == "squared":
        return squares / n
    return (squares / n - (total / n) ** 2).clamp(min=0)


@register("smoothgrad")
def smoothgrad(
    model: nn.Module, images: torch.Tensor, target: Target, *, base: str = "saliency",
    n_samples: int = 50, noise: float = 0.15, seed: int = 0, variant: str = "smoothgrad",
    batch_size: int = 32, **base_options,
) -> Attribution:
    """SmoothGrad on top of any method ``base`` (``base_options`` go to it).

    Defaults from the paper: 50 samples, Gaussian noise with ``sigma = 0.15 * (max - min)``
    of each image (a fraction of the input range; Captum's ``NoiseTunnel`` takes an absolute
    ``stdevs`` instead). For gradient bases with a ``max |.|`` map (saliency, guided backprop,
    deconvnet) the raw gradients are averaged and then reduced, as in the paper; for others
    ``maps`` and ``raw`` are averaged. The same ``n_samples`` noise patterns (seeded) are used
    for every image, so an image's result does not depend on the rest of the batch.
    ``base="integrated_gradients"`` gives SmoothGrad-IG (costs ``n_samples * n_steps`` passes).

    ``variant``: ``"smoothgrad"`` (the mean), ``"squared"`` (SmoothGrad-Squared, Hooker et al.
    2019: the mean of the squares) or ``"vargrad"`` (Adebayo et al. 2018: the variance over the
    samples, ``mean(a^2) - mean(a)^2``, clamped at 0 against rounding). As in Captum's
    ``NoiseTunnel`` (``smoothgrad_sq`` / ``vargrad``) the squares are taken element by element
    of the base's attribution: of ``raw`` (for saliency the signed gradient per colour channel,
    so the square of the raw gradient) and, for bases without a ``max |.|`` map, of ``maps``;
    ``max |.|`` bases then take the largest value over colour channels. Captum's ``Saliency``
    takes ``|grad|`` first by default: the same squares, but its VarGrad is then the variance
    of ``|grad|``; ours is that of the signed gradient (the paper's; Captum with ``abs=False``).
    """
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; choose {', '.join(VARIANTS)}")
    if base == "smoothgrad" or base not in METHODS:
        raise InputError(f"base must be another method of METHODS, not {base!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive integer, not {n_samples!r}")
    explain = inner(base, base_options)
    target.resolve(model, images, batch_size)
    generator = torch.Generator().manual_seed(seed)
    patterns = torch.randn((n_samples, *images.shape[1:]), generator=generator).to(images)
    flat = images.flatten(1)
    sigma = noise * (flat.amax(1) - flat.amin(1))
    maps = raw = None
    maps_sq = raw_sq = None
    options = {}
    for part in chunks(len(images) * n_samples, batch_size, desc="smoothgrad"):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image, sample = pair // n_samples, pair % n_samples
        noisy = images[image] + sigma[image].view(-1, 1, 1, 1) * patterns[sample]
        result = explain(model, noisy, target.take(image), batch_size=batch_size, **base_options)
        if maps is None:
            maps = images.new_zeros((len(images), *result.maps.shape[1:]))
            maps_sq = maps.clone()
            if result.raw is not None:
                raw = images.new_zeros((len(images), *result.raw.shape[1:]))
                raw_sq = raw.clone()
            options = {k: v for k, v in result.options.items() if k == "layer"}
        maps.index_add_(0, image, result.maps)
        if variant != "smoothgrad":
            maps_sq.index_add_(0, image, result.maps ** 2)
        if raw is not None:
            raw.index_add_(0, image, result.raw)
            if variant != "smoothgrad":
                raw_sq.index_add_(0, image, result.raw ** 2)
    raw = None if raw is None else _combine(raw, raw_sq, n_samples, variant)
    maps = abs_max(raw) if base in ABS_MAX and raw is not None else _combine(
        maps, maps_sq, n_samples, variant)
    return Attribution(maps, raw=raw, options=options)
