"""Pictures of feature visualization: PNG files, the dataset crops where a unit fires most, and
a figure of renderings above those crops.

Example:
    >>> import torch
    >>> to_uint8(torch.ones(3, 2, 2)).shape
    (2, 2, 3)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


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


# -- dataset examples --------------------------------------------------------------------------

def top_crops(model, images: torch.Tensor, layer: str, channels: list[int], *, k: int = 3,
              crop: int | None = None) -> list[list[tuple[torch.Tensor, float, int]]]:
    """Per channel the ``k`` images with the highest max activation, cropped around that peak.

    Returns ``[[(crop (3, c, c), activation, image index), ...] per channel]``. The crop side is
    four times the layer's stride (at least 16 px), a rough stand-in for its receptive field.
    """
    from seethrough.trace import capture

    activation = capture(model, images, layer)[layer].output[:, channels]  # (N, K, h, w)
    n, _, height, width = images.shape
    stride = height / activation.shape[-2]
    side = min(height, crop or max(16, round(4 * stride)))
    peaks, where = activation.flatten(2).max(2)  # (N, K)
    result = []
    for j in range(len(channels)):
        values, order = peaks[:, j].topk(min(k, n))
        row = []
        for value, index in zip(values.tolist(), order.tolist()):
            y, x = divmod(int(where[index, j]), activation.shape[-1])
            cy, cx = int((y + 0.5) * stride), int((x + 0.5) * width / activation.shape[-1])
            top = min(max(0, cy - side // 2), height - side)
            left = min(max(0, cx - side // 2), width - side)
            row.append((images[index, :, top:top + side, left:left + side], value, index))
        result.append(row)
    return result


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
