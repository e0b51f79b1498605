"""Top-k predictions next to each image.

Example:
    >>> import torch
    >>> fig = topk_figure(torch.rand(2, 3, 8, 8), torch.rand(2, 5).softmax(1), [str(i) for i in range(5)])
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure


def topk_figure(images: torch.Tensor, probabilities: torch.Tensor, class_names: list[str],
                k: int = 5, titles: list[str] | None = None) -> Figure:
    """One row per image: the image, then a bar chart of its top-k class probabilities."""
    count = images.shape[0]
    figure = Figure(figsize=(7, 2.1 * count))
    top = probabilities.detach().cpu().topk(min(k, probabilities.shape[1]), dim=1)
    for row in range(count):
        image_axis = figure.add_subplot(count, 2, 2 * row + 1)
        image_axis.imshow(images[row].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        image_axis.axis("off")
        if titles:
            image_axis.set_title(titles[row], fontsize=9)
        bar_axis = figure.add_subplot(count, 2, 2 * row + 2)
        values = top.values[row].numpy()[::-1]
        labels = [class_names[i] for i in top.indices[row].tolist()][::-1]
        bar_axis.barh(range(len(values)), values, color="#4c72b0")
        bar_axis.set_yticks(range(len(values)), labels, fontsize=8)
        bar_axis.set_xlim(0, 1)
        bar_axis.tick_params(axis="x", labelsize=7)
    figure.tight_layout()
    return figure
