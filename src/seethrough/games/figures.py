"""Figures of the games family: example rounds as image rows with the message and the pick.

Example:
    >>> import torch
    >>> figure = games_figure(torch.rand(2, 2, 3, 8, 8), torch.tensor([0, 1]),
    ...                       [["a: shape:star ✓"], ["b: colour:red ✗"]])
    >>> len(figure.axes)
    4
"""
from __future__ import annotations

import torch


def games_figure(images: torch.Tensor, targets: torch.Tensor, captions: list[list[str]],
                 size: float = 1.1):
    """One row per game: its candidates ``images`` ``(G, K + 1, 3, H, W)`` (the target framed
    green), and to the right the lines of ``captions[g]`` (e.g. each speaker's message and
    whether the listener picked the target)."""
    from matplotlib.figure import Figure

    games, columns = images.shape[:2]
    fig = Figure(figsize=(size * columns + 3.4, size * games + 0.2))
    axes = fig.subplots(games, columns, squeeze=False)
    for g in range(games):
        for c in range(columns):
            ax = axes[g][c]
            ax.imshow(images[g, c].detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            target = c == int(targets[g])
            for spine in ax.spines.values():
                spine.set_visible(target)
                spine.set_color("#2a9d3a")
                spine.set_linewidth(3)
            if g == 0:
                ax.set_title("target" if target else "distractor", fontsize=7)
            elif target:
                ax.set_title("target", fontsize=7)
        axes[g][-1].text(1.08, 0.5, "\n".join(captions[g]), transform=axes[g][-1].transAxes,
                         fontsize=7, va="center", ha="left", family="monospace")
    fig.subplots_adjust(left=0.02, right=0.98 - 3.3 / (size * columns + 3.4), wspace=0.08,
                        hspace=0.25, top=0.92, bottom=0.02)
    return fig


__all__ = ["games_figure"]
