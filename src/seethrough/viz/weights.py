"""Pictures of weights: first-layer filters as small RGB images.

Example:
    >>> import torch
    >>> fig = filters_figure(torch.randn(16, 3, 5, 5))
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.figure import Figure


def filters_figure(weight: torch.Tensor, title: str = "", columns: int = 16) -> Figure:
    """Each filter of a ``(out, 3, k, k)`` weight scaled symmetrically around grey."""
    weight = weight.detach().float().cpu()
    if weight.shape[1] != 3:
        weight = weight.mean(1, keepdim=True).repeat(1, 3, 1, 1)
    count = weight.shape[0]
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(columns * 0.6, rows * 0.6 + (0.4 if title else 0)))
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-8)
    images = (0.5 + 0.5 * weight / scale).permute(0, 2, 3, 1).numpy()
    for index in range(rows * columns):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.axis("off")
        if index < count:
            axis.imshow(np.clip(images[index], 0, 1), interpolation="nearest")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure
