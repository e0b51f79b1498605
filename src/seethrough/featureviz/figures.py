"""Pictures of feature visualization: PNG files, and a figure of renderings above the dataset
patches where each unit fires most (``seethrough.represent.top_patches``).

Example:
    >>> import torch
    >>> to_uint8(torch.ones(3, 2, 2)).shape
    (2, 2, 3)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one (3, H, W) image in [0, 1] as a PNG, atomically (temporary file, then rename)."""
    from PIL import Image

    from seethrough.atomic import atomic_path

    with atomic_path(path) as temporary:
        Image.fromarray(to_uint8(image)).save(temporary, format="PNG")
    return Path(path)


def most_active_channels(model, images: torch.Tensor, layer: str, count: int) -> list[int]:
    """The ``count`` channels with the highest peak activation (mean over images, standardized)."""
    from seethrough.trace import capture

    activation = capture(model, images, layer)[layer].output.flatten(2).max(2).values  # (N, C)
    score = activation.mean(0) / activation.std(0).clamp_min(1e-6) if len(images) > 1 else activation[0]
    return score.topk(min(count, activation.shape[1])).indices.tolist()


def channel_figure(title: str, renders: torch.Tensor, channels: list[int], crops, labels=None):
    """Columns = channels; row 0 = the rendering, rows 1.. = top dataset crops."""
    from matplotlib.figure import Figure

    rows = 1 + max(len(c) for c in crops)
    cols = len(channels)
    figure = Figure(figsize=(1.7 * cols, 1.8 * rows))
    figure.suptitle(title, fontsize=10)
    for j, channel in enumerate(channels):
        ax = figure.add_subplot(rows, cols, j + 1)
        ax.imshow(to_uint8(renders[j]))
        heading = f"unit {channel}"
        if labels and labels.get(channel):
            heading += f"\n{labels[channel]}"
        ax.set_title(heading, fontsize=8)
        ax.axis("off")
        for i, (patch, value, _) in enumerate(crops[j]):
            ax = figure.add_subplot(rows, cols, (i + 1) * cols + j + 1)
            ax.imshow(to_uint8(patch), interpolation="nearest")
            ax.set_title(f"{value:.2f}", fontsize=7)
            ax.axis("off")
    figure.tight_layout()
    return figure


def row_html(images, captions, width=150) -> str:
    """Images side by side with captions, as report HTML."""
    from seethrough.viz.html import image_grid_html

    return image_grid_html(list(images), captions, width=width)


def resized(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """``images`` (N, C, H, W) resized to ``size`` (antialiased bilinear), kept in [0, 1]."""
    return F.interpolate(images, size=size, mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)
