"""Score-CAM (Wang et al. 2020): weigh each channel by how much its map alone raises the score.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> scorecam(model, torch.rand(1, 3, 64, 64), 0, top_channels=8).maps.shape
    torch.Size([1, 1, 64, 64])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution.cams import layer_name, weighted_sum
from seethrough.attribution.layers import to_grid, upsample
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.trace import Trace


@register("scorecam")
def scorecam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    top_channels: int | None = None, grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Score-CAM, the authors' formula.

    Each activation map ``A_k`` is upsampled to the input, min-max normalized to [0, 1] and
    multiplies the image; its weight is the target's softmax probability on that masked image
    minus the probability on the baseline (a black image, ``X_b = 0``): ``C(A_k) = f(X * H_k)
    - f(X_b)``. The map is ``ReLU(sum_k C(A_k) A_k)``. Masked images run ``batch_size`` at a
    time without autograd. A constant map gives the all-black image, whose weight is exactly 0,
    so it is skipped. ``top_channels=k`` keeps the ``k`` channels with the largest mean
    activation per image (faster, not the paper). A callable target's value is used instead of
    the softmax probability.
    """
    name = layer_name(model, layer)
    size = images.shape[-2:]
    activations = []
    with torch.no_grad():
        for part in chunks(len(images), batch_size):
            with Trace(model, name) as trace:
                target.scores(model(images[part]), part, clean=True)
            activations.append(to_grid(trace[name].output, name, grid))
        acts = torch.cat(activations)
        baseline = torch.cat([
            target.scores(model(torch.zeros_like(images[part])), part, probabilities=True)
            for part in chunks(len(images), batch_size)
        ])
        flat = acts.flatten(2)
        useful = flat.amax(2) > flat.amin(2)
        if top_channels is not None:
            if not isinstance(top_channels, int) or top_channels < 1:
                raise InputError(f"top_channels must be a positive integer, not {top_channels!r}")
            top = flat.mean(2).topk(min(top_channels, acts.shape[1]), dim=1).indices
            chosen = torch.zeros_like(useful).scatter_(1, top, True)
            useful &= chosen
        image, channel = useful.nonzero(as_tuple=True)
        weights = torch.zeros(acts.shape[:2], dtype=images.dtype, device=images.device)
        for part in chunks(len(image), batch_size, desc="scorecam"):
            i, k = image[part], channel[part]
            masks = upsample(acts[i, k][:, None], size).flatten(1)
            low_k, high_k = masks.amin(1, keepdim=True), masks.amax(1, keepdim=True)
            masks = ((masks - low_k) / (high_k - low_k).clamp(min=1e-12)).view(-1, 1, *size)
            score = target.scores(model(images[i] * masks), i, probabilities=True)
            weights[i, k] = score - baseline[i]
    cam = weighted_sum(weights, acts, relu=True)
    return Attribution(upsample(cam, size), raw=cam, options={"layer": name})
