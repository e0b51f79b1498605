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
import torch.nn.functional as F


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
        if row_titles is not None:
            _row_title(axes[row, 0], row_titles[row])
    figure.subplots_adjust(wspace=0.03, hspace=0.05, left=0.06, right=0.99, top=0.95, bottom=0.01)
    return figure


def _cell(ax, picture, title: str | None = None) -> None:
    ax.imshow(picture)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _row_title(ax, title: str) -> None:
    """Wrapped, so long titles do not run into the next row."""
    ax.set_ylabel("\n".join(textwrap.wrap(str(title), 16, max_lines=3, placeholder="...")),
                  fontsize=6)


def channels_figure(images: torch.Tensor, scores, *, k: int = 4,
                    row_titles: Sequence[str] | None = None, cell: float = 1.35):
    """Each image, then where its ``k`` highest-scoring channels take their share from: the
    positive part of ``activation x gradient`` per position, upsampled, over the image.

    ``scores``: a ``ChannelScores`` made with ``keep_maps=True``.
    """
    from matplotlib.figure import Figure

    if scores.maps is None:
        raise ValueError("channels_figure needs channel_attribution(..., keep_maps=True)")
    top = scores.top(k)
    rows, cols = len(images), top.shape[1] + 1
    figure = Figure(figsize=(cell * cols, cell * rows + 0.3))
    axes = figure.subplots(rows, cols, squeeze=False)
    pictures = images.detach().cpu().permute(0, 2, 3, 1).clamp(0, 1).numpy()
    maps = F.interpolate(scores.maps.detach().float().cpu().clamp(min=0), size=images.shape[-2:],
                         mode="bilinear", align_corners=False)
    for row in range(rows):
        _cell(axes[row, 0], pictures[row], "image" if row == 0 else None)
        peak = maps[row, top[row]].max().clamp(min=1e-12)
        for col, channel in enumerate(top[row].tolist(), start=1):
            ax = axes[row, col]
            _cell(ax, pictures[row], f"ch {channel}: {float(scores.scores[row, channel]):.2g}")
            ax.imshow((maps[row, channel] / peak).numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        if row_titles is not None:
            _row_title(axes[row, 0], row_titles[row])
    figure.subplots_adjust(wspace=0.03, hspace=0.25, left=0.06, right=0.99, top=0.93, bottom=0.01)
    return figure


def segments_figure(images: torch.Tensor, maps, segments: torch.Tensor, *,
                    masks: torch.Tensor | None = None, row_titles: Sequence[str] | None = None,
                    cell: float = 1.6):
    """Each image, its map, and the GrabCut segment made from it (the rest dimmed; white: the
    true object's outline where ``masks`` are given)."""
    from matplotlib.figure import Figure

    heat = display_map(maps) if hasattr(maps, "maps") else maps.detach().abs()[:, 0].cpu()
    rows = len(images)
    figure = Figure(figsize=(cell * 3, cell * rows + 0.3))
    axes = figure.subplots(rows, 3, squeeze=False)
    pictures = images.detach().cpu().permute(0, 2, 3, 1).clamp(0, 1)
    for row in range(rows):
        keep = segments[row].cpu()[..., None].float()
        dimmed = pictures[row] * (0.25 + 0.75 * keep)
        _cell(axes[row, 0], pictures[row].numpy(), "image" if row == 0 else None)
        _cell(axes[row, 1], pictures[row].numpy(), "map" if row == 0 else None)
        axes[row, 1].imshow(heat[row].numpy(), cmap="jet", alpha=0.5)
        _cell(axes[row, 2], dimmed.numpy(), "GrabCut segment" if row == 0 else None)
        if masks is not None:
            for ax in axes[row]:
                ax.contour(masks[row].cpu().numpy().astype(float), levels=[0.5], colors="white",
                           linewidths=0.8)
        if row_titles is not None:
            _row_title(axes[row, 0], row_titles[row])
    figure.subplots_adjust(wspace=0.03, hspace=0.12, left=0.06, right=0.99, top=0.95, bottom=0.01)
    return figure
