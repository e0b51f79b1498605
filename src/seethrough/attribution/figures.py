"""Pictures of attribution maps: every method side by side over the images.

Example:
    >>> import torch, torchvision
    >>> from seethrough.attribution import attribute
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> figure = methods_figure(x, {"saliency": (attribute(model, x), 0.1)}, row_titles=["a", "b"])
    >>> len(figure.axes)
    4
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import torch


def display_map(result) -> torch.Tensor:
    """A map for display ``(N, H, W)`` in [0, 1]: ``|map|`` scaled by its maximum per image."""
    maps = result.maps.detach().abs()[:, 0].cpu()
    return maps / maps.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)


def methods_figure(images: torch.Tensor, results: dict, *, masks: torch.Tensor | None = None,
                   row_titles: Sequence[str] | None = None, cell: float = 1.35):
    """A grid: the image, then one heatmap per method (``|map|``, max-scaled, over the image).

    ``results`` is ``{title: (Attribution, seconds)}``; only the first ``len(images)`` maps are drawn.

    With ``masks`` (N, H, W) the ground-truth object is outlined in white on every cell.
    """
    from matplotlib.figure import Figure

    names = list(results)
    rows, cols = len(images), len(names) + 1
    figure = Figure(figsize=(cell * cols, cell * rows + 0.3))
    axes = figure.subplots(rows, cols, squeeze=False)
    pictures = images.detach().cpu().permute(0, 2, 3, 1).clamp(0, 1).numpy()
    heat = {name: display_map(results[name][0])[:rows].numpy() for name in names}
    for row in range(rows):
        for col in range(cols):
            ax = axes[row, col]
            ax.imshow(pictures[row])
            if col:
                ax.imshow(heat[names[col - 1]][row], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if masks is not None:
                ax.contour(masks[row].cpu().numpy().astype(float), levels=[0.5], colors="white",
                           linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("image" if col == 0 else names[col - 1].replace("_", " "), fontsize=7)
        if row_titles is not None:  # wrapped, so long titles do not run into the next row
            title = "\n".join(textwrap.wrap(str(row_titles[row]), 16, max_lines=3,
                                             placeholder="..."))
            axes[row, 0].set_ylabel(title, fontsize=6)
    figure.subplots_adjust(wspace=0.03, hspace=0.05, left=0.06, right=0.99, top=0.95, bottom=0.01)
    return figure
