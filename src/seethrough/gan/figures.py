"""Figures of the GAN family: image grids before and after an edit, and walks along a direction.

Example:
    >>> import torch
    >>> figure = before_after_figure(torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8), "an edit")
    >>> len(figure.axes)
    6
"""
from __future__ import annotations

import torch


def image_grid_figure(rows: list[torch.Tensor], row_titles: list[str], title: str = "",
                      column_titles: list[str] | None = None, size: float = 1.2):
    """Rows of images (each (N, 3, H, W) in [0, 1]) in one figure, a title per row."""
    from matplotlib.figure import Figure

    columns = max(len(r) for r in rows)
    fig = Figure(figsize=(size * columns + 1.2, size * len(rows) + (0.5 if title else 0.1)))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (images, name) in enumerate(zip(rows, row_titles)):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                ax.imshow(images[c].detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0 and column_titles:
                ax.set_title(column_titles[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def before_after_figure(before: torch.Tensor, after: torch.Tensor, title: str = ""):
    """Generated images before (top row) and after (bottom row) an edit."""
    return image_grid_figure([before, after], ["before", "after"], title)


__all__ = ["before_after_figure", "image_grid_figure"]
