"""Attribution maps drawn over their images.

``overlay`` blends one map (coloured by a matplotlib colormap) over one image and returns an
``H x W x 3`` float array in [0, 1]; ``attribution_grid`` draws one row per image and one
column per method. Maps are normalized here, for display only: signed maps (any negative
value) by the 99th percentile of their magnitude with a diverging colormap, non-negative ones
from their minimum to their 99th percentile with a sequential one (the percentile keeps a few
extreme gradients from washing out the rest, as Captum's visualizer does).

Example:
    >>> import torch
    >>> overlay(torch.rand(3, 8, 8), torch.rand(1, 8, 8)).shape
    (8, 8, 3)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure


def _image_array(image) -> np.ndarray:
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.clip(array, 0, 1)


def _map_array(attribution_map) -> np.ndarray:
    if isinstance(attribution_map, torch.Tensor):
        attribution_map = attribution_map.detach().cpu().float().numpy()
    array = np.asarray(attribution_map, float)
    while array.ndim > 2:
        if array.shape[0] == 1:
            array = array[0]
        else:  # a per-channel map: show the largest magnitude per pixel
            array = np.abs(array).max(0)
    return array


def colorize(attribution_map, cmap: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb, strength)``: the map coloured, and its normalized magnitude in [0, 1]."""
    array = _map_array(attribution_map)
    if (array < 0).any():
        scale = np.percentile(np.abs(array), 99) or np.abs(array).max() or 1.0
        signed = np.clip(array / scale, -1, 1)
        return colormaps[cmap or "bwr"](0.5 + 0.5 * signed)[..., :3], np.abs(signed)
    low = array.min()
    span = (np.percentile(array, 99) - low) or (array.max() - low) or 1.0
    strength = np.clip((array - low) / span, 0, 1)
    return colormaps[cmap or "inferno"](strength)[..., :3], strength


def overlay(image, attribution_map, *, alpha: float = 0.6, cmap: str | None = None) -> np.ndarray:
    """Blend a map over an image: ``(H, W, 3)`` floats in [0, 1].

    Args:
        image: (C, H, W) tensor or (H, W, C) array in [0, 1].
        attribution_map: (H, W), (1, H, W) or (C, H, W) map at the image's resolution.
        alpha: opacity of the map where it is strongest (weak values let the image through).
        cmap: matplotlib colormap (default ``inferno``, or ``bwr`` for signed maps).
    """
    picture = _image_array(image)
    rgb, strength = colorize(attribution_map, cmap)
    if rgb.shape[:2] != picture.shape[:2]:
        raise ValueError(f"map {rgb.shape[:2]} and image {picture.shape[:2]} differ in size")
    weight = alpha * np.sqrt(strength)[..., None]
    return np.clip(picture * (1 - weight) + rgb * weight, 0, 1)


def attribution_grid(
    images, maps: Mapping[str, object], *, titles: Sequence[str] | None = None,
    alpha: float = 0.6, size: float = 1.7,
) -> Figure:
    """One row per image (the image, then one overlay per method), one column per method.

    Args:
        images: (N, C, H, W) tensor in [0, 1].
        maps: ``{method name: (N, 1, H, W) maps or an Attribution}``.
        titles: a caption per image (e.g. the class), shown at the left of each row.
    """
    columns = {name: getattr(value, "maps", value) for name, value in maps.items()}
    count = len(images)
    figure = Figure(figsize=(size * (1 + len(columns)), size * count + 0.3))
    axes = figure.subplots(count, 1 + len(columns), squeeze=False)
    for row in range(count):
        axes[row, 0].imshow(_image_array(images[row]))
        axes[row, 0].set_ylabel(titles[row] if titles else "", fontsize=8)
        for column, (name, values) in enumerate(columns.items(), start=1):
            axes[row, column].imshow(overlay(images[row], values[row], alpha=alpha))
            if row == 0:
                axes[row, column].set_title(name.replace("_", " "), fontsize=8)
        if row == 0:
            axes[row, 0].set_title("image", fontsize=8)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout(pad=0.3)
    return figure
