"""Does the map point at the object? Scores against ground-truth masks (ConceptWorld's
``object_mask``), each per image, ``NaN`` where an image has no object pixels.

* ``pointing_game`` (Zhang et al., 2016, Excitation Backprop): a hit when the map's maximum lies
  within ``tolerance`` pixels of the object (15 px at 224 px, scaled with the image size).
* ``energy_pointing_game`` (Wang et al., 2020, Score-CAM): the share of the map's positive
  energy that falls inside the object (Score-CAM uses the bounding box: ``box=True``).
* ``mask_iou``: intersection over union of the map's top ``top`` fraction of pixels and the mask.

Example:
    >>> import torch
    >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool); masks[0, 2:4, 2:4] = True
    >>> energy_pointing_game(masks.float(), masks).item()
    1.0
"""
from __future__ import annotations

import torch

from seethrough.core.inputs import as_maps, as_masks
from seethrough.errors import InputError

#: Zhang et al.'s tolerance, in pixels at 224 x 224
TOLERANCE_AT_224 = 15


def default_tolerance(size: int) -> int:
    """15 px at 224 px, scaled with the image's side: 4 px at 64 px."""
    return max(0, round(TOLERANCE_AT_224 * size / 224))


def _inputs(maps, masks):
    masks_size = getattr(masks, "shape", None)
    if isinstance(masks, (list, tuple)):
        masks_size = torch.as_tensor(masks[0]).shape
    if masks_size is None:
        raise InputError(f"masks must be a tensor (N, H, W), not {type(masks).__name__}")
    size = tuple(masks_size[-2:])
    maps = as_maps(maps, size=size)
    masks = as_masks(masks, size=size, count=len(maps)).to(maps.device)
    return maps, masks


def _nan_where_empty(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks.flatten(1).any(1), scores, torch.full_like(scores, float("nan")))


def pointing_game(maps, masks, *, tolerance: int | None = None) -> torch.Tensor:
    """1.0 where the map's maximum is within ``tolerance`` px of the mask, else 0.0; ``(N,)``.

    Ties for the maximum: the first in raster order. ``tolerance`` defaults to
    ``default_tolerance(W)`` (15 px at 224 px). Quantus' ``PointingGame`` has no tolerance and
    counts a hit when any pixel tied for the maximum is on the object: with ``tolerance=0`` and
    no ties they agree (tests/evaluation/test_quantus_agreement.py).
    """
    maps, masks = _inputs(maps, masks)
    _, height, width = maps.shape
    tolerance = default_tolerance(width) if tolerance is None else tolerance
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 pixels, not {tolerance}")
    peak = maps.flatten(1).argmax(1)
    py, px = (peak // width).float(), (peak % width).float()
    ys = torch.arange(height, device=maps.device, dtype=torch.float32).view(1, -1, 1)
    xs = torch.arange(width, device=maps.device, dtype=torch.float32).view(1, 1, -1)
    distance2 = (ys - py.view(-1, 1, 1)) ** 2 + (xs - px.view(-1, 1, 1)) ** 2
    near = (distance2 <= tolerance**2) & masks
    return _nan_where_empty(near.flatten(1).any(1).float(), masks)


def bounding_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Each mask's bounding box, filled, as a bool mask ``(N, H, W)``."""
    rows, cols = masks.any(2), masks.any(1)
    index_h = torch.arange(masks.shape[1], device=masks.device)
    index_w = torch.arange(masks.shape[2], device=masks.device)

    def span(hit, index):
        first = torch.where(hit, index, len(index)).min(1).values
        last = torch.where(hit, index, -1).max(1).values
        return (index >= first[:, None]) & (index <= last[:, None])

    return span(rows, index_h)[:, :, None] & span(cols, index_w)[:, None, :]


def energy_pointing_game(maps, masks, *, box: bool = False) -> torch.Tensor:
    """Share of the positive map energy inside the mask (or its bounding box); ``(N,)`` in [0, 1].

    A map with no positive values scores 0. Equal to Quantus' ``AttributionLocalisation``
    (Kohlbrenner et al. 2020) with ``abs=False, normalise=False``.
    """
    maps, masks = _inputs(maps, masks)
    region = bounding_boxes(masks) if box else masks
    positive = maps.clamp(min=0)
    inside = (positive * region).flatten(1).sum(1)
    total = positive.flatten(1).sum(1)
    share = torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))
    return _nan_where_empty(share, masks)


def iou(predicted, masks) -> torch.Tensor:
    """Intersection over union of two bool masks ``(N, H, W)``; 1.0 where both are empty."""
    predicted, masks = torch.as_tensor(predicted).bool(), torch.as_tensor(masks).bool()
    if predicted.shape != masks.shape:
        raise InputError(f"masks differ in shape: {tuple(predicted.shape)} and {tuple(masks.shape)}")
    intersection = (predicted & masks).flatten(1).sum(1).float()
    union = (predicted | masks).flatten(1).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def top_fraction(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """The ``round(fraction * H * W)`` highest pixels of each map ``(N, H, W)`` as a bool mask."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"top must be a fraction in (0, 1], not {fraction}")
    count, height, width = maps.shape
    k = max(1, round(fraction * height * width))
    index = maps.flatten(1).topk(k, dim=1).indices
    chosen = torch.zeros(count, height * width, dtype=torch.bool, device=maps.device)
    chosen.scatter_(1, index, True)
    return chosen.view(count, height, width)


def mask_iou(maps, masks, *, top: float = 0.2) -> torch.Tensor:
    """IoU of each map's top ``top`` fraction of pixels (default 20%) with the mask; ``(N,)``."""
    maps, masks = _inputs(maps, masks)
    return _nan_where_empty(iou(top_fraction(maps, top), masks), masks)
