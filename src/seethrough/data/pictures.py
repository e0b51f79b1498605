"""Pictures of a concept dataset: images over rows of their colour, shape and texture masks.

Example:
    >>> from seethrough.data import ConceptWorld
    >>> fig = sample_grid(ConceptWorld("val", length=8), n=4)
    >>> type(fig).__name__
    'Figure'
"""
from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

_ROWS = ("image", "colour", "shape", "texture")


def _palette(category: str, names: list[str], dataset) -> np.ndarray:
    """RGB per label value; 0 (none) is dark grey, colours use their reference RGB."""
    rgb = getattr(dataset, "colour_rgb", {})
    if category == "colour" and all(n in rgb for n in names[1:]):
        values = [rgb[n] for n in names[1:]]
    else:
        cmap = colormaps["tab20"]
        values = [cmap(k % 20)[:3] for k in range(len(names) - 1)]
    return np.array([(0.15, 0.15, 0.15), *values])


def sample_grid(dataset, n: int = 8) -> Figure:
    """Figure with ``n`` samples in columns: image, colour mask, shape mask, texture mask.

    ``dataset`` yields the ConceptWorld sample dict and has a ``categories`` attribute.
    Titles give the class and scene; each mask row has a legend of the labels it shows.
    """
    n = min(n, len(dataset))
    samples = [dataset[i] for i in range(n)]
    fig = Figure(figsize=(1.6 * n + 2.2, 1.7 * len(_ROWS)), layout="constrained")
    axes = fig.subplots(len(_ROWS), n, squeeze=False)
    cats = dataset.categories
    for col, s in enumerate(samples):
        image = s["image"].permute(1, 2, 0).numpy()
        name = getattr(dataset, "class_names", cats["shape"][1:])[s["label"]]
        axes[0, col].imshow(image, interpolation="nearest")
        axes[0, col].set_title(f"{name}\n{cats['scene'][s['scene']]}", fontsize=8)
        for row, category in enumerate(_ROWS[1:], start=1):
            names = cats[category]
            cmap = ListedColormap(_palette(category, names, dataset))
            mask = s["masks"][category].numpy()
            axes[row, col].imshow(mask, cmap=cmap, vmin=0, vmax=len(names) - 1,
                                  interpolation="nearest")
    for row, category in enumerate(_ROWS):
        axes[row, 0].set_ylabel(category, fontsize=9)
        if row:
            names = cats[category]
            palette = _palette(category, names, dataset)
            shown = sorted({int(v) for s in samples for v in np.unique(s["masks"][category])})
            handles = [Patch(color=palette[v], label=names[v]) for v in shown]
            axes[row, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5),
                                 fontsize=7, frameon=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
