"""What part of a patch a unit responds to: an input-gradient method (guided backpropagation by
default, Springenberg et al. 2015) of the unit at its peak, on each of its top patches.

The lecture's recipe for "find the part of the image a neuron responds to": take the images
where the unit fires most, and backpropagate from that unit at that position alone. The
gradient is zero outside the unit's receptive field, so cropping it like the patch
(``field_crop``) shows all of it beside the patch.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from seethrough.represent import top_patches
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> images = torch.rand(6, 3, 16, 16)
    >>> patches = top_patches(net, "2", images, k=2, size=8, progress=False)
    >>> patch_responses(net, patches, images).shape
    torch.Size([2, 2, 3, 8, 8])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.represent.patches import Patches, field_crop, read_images
from seethrough.represent.receptive import field_map

#: the share of the largest gradient values drawn saturated (Captum's visualizer clips 2 %)
OUTLIERS = 0.01


def gradient_picture(gradient: torch.Tensor) -> torch.Tensor:
    """A signed ``(3, H, W)`` gradient as an image, as Springenberg et al. show guided
    backpropagation: grey is zero, scaled so that the top ``OUTLIERS`` of the non-zero
    absolute values saturate."""
    magnitude = gradient.abs()
    nonzero = magnitude[magnitude > 0]
    if not len(nonzero):
        return torch.full_like(gradient, 0.5)
    peak = torch.quantile(nonzero.float()[:2**24], 1 - OUTLIERS).clamp(min=1e-12)
    return (0.5 + gradient / (2 * peak)).clamp(0, 1)


def patch_responses(model: nn.Module, patches: Patches, data, *,
                    method: str = "guided_backprop", collate=None) -> torch.Tensor:
    """``(U, k, 3, S, S)``: ``method``'s colour gradient of each unit at its peak position, on
    the image of each of its top patches, cropped to the patch's receptive field (grey: zero,
    and outside the image).

    ``data`` is what ``top_patches`` ran on; ``method`` any attribution method with a per-colour
    ``raw`` gradient ("guided_backprop", "saliency", "deconvnet", ...).
    """
    from seethrough.attribution import attribute
    from seethrough.core import unit

    needed = sorted(set(patches.indices.flatten().tolist()))
    images = dict(zip(needed, read_images(data, needed, collate)))
    first = images[needed[0]]
    fields = field_map(model, patches.layer, input_size=tuple(first.shape))
    size = patches.crops.shape[-1]
    rows = []
    for u, channel in enumerate(patches.units.tolist()):
        row = []
        for index, position in zip(patches.indices[u].tolist(), patches.positions[u].tolist()):
            target = unit(patches.layer, channel, position=tuple(position))
            made = attribute(model, images[index][None], target, method=method)
            gradient = made.raw[0] if made.raw is not None and made.raw.shape[1] == 3 \
                else made.maps[0].expand(3, -1, -1)
            row.append(field_crop(gradient_picture(gradient.detach().cpu()), fields,
                                  tuple(position), size))
        rows.append(torch.stack(row))
    return torch.stack(rows)


__all__ = ["gradient_picture", "patch_responses"]
