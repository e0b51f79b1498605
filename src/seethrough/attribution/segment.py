"""From a saliency map to an object segmentation with GrabCut (Rother et al., 2004).

A map says roughly where the evidence is; GrabCut turns that into a crisp object mask that
follows the image's colour edges. The map initialises GrabCut's trimap by quantiles: the lowest
``background`` fraction of pixels is sure background, the top ``1 - foreground`` fraction is
sure foreground, and in between the pixels above the ``probable`` quantile are probable
foreground, the others probable background. OpenCV's ``cv2.grabCut`` then fits colour models
and cuts (``iterations`` rounds, 5 by default). Score the result with
``seethrough.evaluation.iou`` against ground truth (ConceptWorld's ``object_mask``).

Example:
    >>> import torch
    >>> images = torch.zeros(1, 3, 32, 32); images[:, 0, 8:24, 8:24] = 1.0   # a red square
    >>> maps = torch.zeros(1, 1, 32, 32); maps[..., 12:20, 12:20] = 1.0      # a rough map
    >>> masks = grabcut(images, maps)
    >>> masks.shape, bool(masks[0, 10, 10]), bool(masks[0, 2, 2])
    (torch.Size([1, 32, 32]), True, False)
"""
from __future__ import annotations

import numpy as np
import torch

from seethrough.core.inputs import as_maps, check_images
from seethrough.errors import InputError


def trimap(maps: torch.Tensor, *, background: float = 0.5, probable: float = 0.8,
           foreground: float = 0.95) -> torch.Tensor:
    """GrabCut labels ``(N, H, W)`` uint8 from maps ``(N, H, W)`` by per-image quantiles.

    0 = sure background, 2 = probable background, 3 = probable foreground, 1 = sure foreground
    (OpenCV's ``GC_BGD, GC_PR_BGD, GC_PR_FGD, GC_FGD``).
    """
    if not 0.0 <= background <= probable <= foreground <= 1.0:
        raise InputError("quantiles must satisfy 0 <= background <= probable <= foreground <= 1, "
                         f"got {background}, {probable}, {foreground}")
    flat = maps.flatten(1).float()
    levels = torch.quantile(flat, torch.tensor([background, probable, foreground]), dim=1).T
    low, mid, high = (levels[:, i].view(-1, 1, 1) for i in range(3))
    labels = torch.full(maps.shape, 2, dtype=torch.uint8)
    labels[maps > mid] = 3
    labels[maps >= high] = 1
    labels[maps < low] = 0
    return labels


def grabcut(images: torch.Tensor, maps, *, background: float = 0.5, probable: float = 0.8,
            foreground: float = 0.95, iterations: int = 5) -> torch.Tensor:
    """Object masks ``(N, H, W)`` bool from images in [0, 1] and their saliency maps.

    Maps may be an ``Attribution`` or ``(N, 1, h, w)``; they are resized to the images. Where
    GrabCut cannot run (the trimap has no foreground or no background pixels, e.g. a constant
    map) the mask is the trimap's foreground (labels 1 and 3).
    """
    import cv2

    images = check_images(images).detach().cpu()
    if images.shape[1] != 3:
        raise InputError(f"GrabCut needs RGB images (N, 3, H, W), got {images.shape[1]} channels")
    if iterations < 1:
        raise InputError(f"iterations must be positive, not {iterations}")
    maps = as_maps(maps, size=images.shape[-2:], count=len(images)).cpu()
    labels = trimap(maps, background=background, probable=probable, foreground=foreground)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for image, label in zip(pixels, labels.numpy()):
        mask = np.ascontiguousarray(label)
        try:
            cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), mask, None,
                        np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64),
                        iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            mask = label
        out.append(torch.from_numpy((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)))
    return torch.stack(out)


def centre_box(count: int, height: int, width: int, *, fraction: float = 0.25) -> torch.Tensor:
    """The baseline segmentation: a centred box covering ``fraction`` of the image, ``(N, H, W)``."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"fraction must be in (0, 1], not {fraction}")
    side = fraction**0.5
    box_h, box_w = max(1, round(height * side)), max(1, round(width * side))
    top, left = (height - box_h) // 2, (width - box_w) // 2
    masks = torch.zeros(count, height, width, dtype=torch.bool)
    masks[:, top:top + box_h, left:left + box_w] = True
    return masks
