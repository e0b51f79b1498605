"""Pictures of representations: top patches, nearest neighbours, thumbnail maps, activation
grids, kernels beyond the first layer and intrinsic-dimension profiles.

Every function returns a matplotlib ``Figure`` (no pyplot state).

Example:
    >>> import torch
    >>> figure = activation_grid_figure(torch.rand(6, 4, 4), title="a layer")
    >>> len(figure.axes)
    6
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from seethrough.results import image_uint8

#: a colour per class / concept (tab20, then grey)
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)


def _image_axis(figure: Figure, rows: int, columns: int, index: int, image, title: str = "",
                size: float = 7):
    axis = figure.add_subplot(rows, columns, index)
    axis.imshow(image_uint8(image), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=size)
    return axis


def patches_figure(patches, units: int | None = 8, labels: dict[int, str] | None = None) -> Figure:
    """Rows = units (with their label), columns = their top patches with the activation."""
    count = len(patches.units) if units is None else min(units, len(patches.units))
    k = patches.values.shape[1]
    figure = Figure(figsize=(1.1 * k + 1.2, 1.15 * count + 0.5))
    field = ("whole image" if patches.field_size is None
             else f"{patches.field_size[0]}x{patches.field_size[1]} px receptive field")
    figure.suptitle(f"{patches.layer}: top patches ({field})", fontsize=9)
    for row in range(count):
        unit = int(patches.units[row])
        for rank in range(k):
            axis = _image_axis(figure, count, k, row * k + rank + 1, patches.crops[row, rank],
                               f"{float(patches.values[row, rank]):.2f}", size=6)
            if rank == 0:
                name = f"unit {unit}" + (f"\n{labels[unit]}" if labels and labels.get(unit) else "")
                axis.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    figure.tight_layout()
    return figure


def responses_figure(patches, responses: torch.Tensor, *, units: int = 4, k: int = 3,
                     method: str = "guided backprop") -> Figure:
    """Rows = units, columns = each top patch beside the unit's gradient on it (``responses``
    from ``patch_responses``): the part of the patch the unit responds to."""
    count, k = min(units, len(patches.units)), min(k, patches.values.shape[1])
    figure = Figure(figsize=(1.1 * 2 * k + 1.0, 1.15 * count + 0.5))
    figure.suptitle(f"{patches.layer}: top patches and the unit's {method}", fontsize=9)
    for row in range(count):
        for rank in range(k):
            index = row * 2 * k + 2 * rank + 1
            axis = _image_axis(figure, count, 2 * k, index, patches.crops[row, rank],
                               f"{float(patches.values[row, rank]):.2f}", size=6)
            _image_axis(figure, count, 2 * k, index + 1, responses[row, rank], method, size=6)
            if rank == 0:
                axis.set_ylabel(f"unit {int(patches.units[row])}", fontsize=7, rotation=0,
                                ha="right", va="center")
    figure.tight_layout()
    return figure


def neighbors_figure(images: Callable[[int], torch.Tensor] | torch.Tensor,
                     queries: Sequence[int], feature_neighbors: torch.Tensor,
                     pixel_neighbors: torch.Tensor, names: Sequence[str] | None = None,
                     title: str = "") -> Figure:
    """Per query row: the query, its nearest images in feature space, then in pixel space."""
    image = images if callable(images) else (lambda i: images[i])
    k = feature_neighbors.shape[1]
    columns = 2 * k + 2
    figure = Figure(figsize=(0.95 * columns, 1.05 * len(queries) + 0.6))
    figure.suptitle(title or "query | nearest in feature space | nearest in pixel space",
                    fontsize=9)
    for row, query in enumerate(queries):
        base = row * columns
        _image_axis(figure, len(queries), columns, base + 1, image(int(query)),
                    names[int(query)] if names else f"query {int(query)}", size=6)
        for j in range(k):
            _image_axis(figure, len(queries), columns, base + 2 + j,
                        image(int(feature_neighbors[row, j])),
                        "features" if row == 0 and j == 0 else "", size=6)
            _image_axis(figure, len(queries), columns, base + 3 + k + j,
                        image(int(pixel_neighbors[row, j])),
                        "pixels" if row == 0 and j == 0 else "", size=6)
    figure.tight_layout()
    return figure


def atlas(points: np.ndarray, thumbnail: Callable[[int], torch.Tensor], *,
          classes: np.ndarray | None = None, cells: int | None = None, side: int = 32,
          border: int = 2, spread: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """A thumbnail atlas of a 2-D map: the plane cut into ``cells`` x ``cells`` squares, each
    holding the image nearest its centre, framed in its class colour.

    ``spread="rank"`` places the points by their rank along each axis first, so tight clusters
    (UMAP's) get room in proportion to their size; the order along each axis is kept.

    Returns the ``(cells*side, cells*side, 3)`` uint8 picture and the ``(cells, cells)`` index
    of the image in each square (-1: empty). Only the chosen images are read, so a map of any
    size costs at most ``cells**2`` thumbnails.
    """
    import torch.nn.functional as F

    points = np.asarray(points, dtype=np.float64)
    if spread == "rank":
        points = np.argsort(np.argsort(points, axis=0, kind="stable"), axis=0).astype(np.float64)
    cells = cells or int(min(40, max(4, math.ceil(math.sqrt(len(points) / 2)))))
    low, high = points.min(0), points.max(0)
    span = np.maximum(high - low, 1e-12)
    scaled = (points - low) / span * cells  # in [0, cells]
    cell = np.minimum(scaled.astype(int), cells - 1)
    distance = np.linalg.norm(scaled - (cell + 0.5), axis=1)
    chosen = np.full((cells, cells), -1)
    best = np.full((cells, cells), np.inf)
    for index in np.argsort(distance, kind="stable"):
        x, y = cell[index]
        if chosen[cells - 1 - y, x] < 0:
            chosen[cells - 1 - y, x] = index
            best[cells - 1 - y, x] = distance[index]
    picture = np.full((cells * side, cells * side, 3), 255, dtype=np.uint8)
    inner = side - 2 * border
    for (row, column), index in np.ndenumerate(chosen):
        if index < 0:
            continue
        small = F.interpolate(thumbnail(int(index))[None].float(), size=(inner, inner),
                              mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = row * side, column * side
        frame = (_rgb(PALETTE[int(classes[index]) % len(PALETTE)]) if classes is not None
                 else np.array([255, 255, 255], dtype=np.uint8))
        picture[top:top + side, left:left + side] = frame
        picture[top + border:top + side - border, left + border:left + side - border] = \
            image_uint8(small)
    return picture, chosen


def map_figure(points: np.ndarray, thumbnail: Callable[[int], torch.Tensor], *,
               classes: np.ndarray | None = None, class_names: Sequence[str] | None = None,
               title: str = "", cells: int | None = None) -> Figure:
    """A 2-D map of images: the scatter of every point coloured by class, and beside it the
    thumbnail atlas of the same map (``atlas`` with ``spread="rank"``)."""
    from matplotlib.patches import Patch

    picture, _ = atlas(points, thumbnail, classes=classes, cells=cells, spread="rank")
    figure = Figure(figsize=(12, 6.2))
    scatter, grid = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1]})
    colours = ([PALETTE[int(c) % len(PALETTE)] for c in classes] if classes is not None
               else "#1f77b4")
    size = max(1.0, min(12.0, 4000 / max(len(points), 1)))
    scatter.scatter(points[:, 0], points[:, 1], c=colours, s=size, linewidths=0)
    scatter.set_xticks([])
    scatter.set_yticks([])
    scatter.set_title(f"{len(points):,} images", fontsize=9)
    grid.imshow(picture, interpolation="nearest")
    grid.axis("off")
    grid.set_title("atlas: placed by rank along each axis, the image nearest each cell's "
                   "centre", fontsize=9)
    if classes is not None:
        present = sorted({int(c) for c in classes})
        handles = [Patch(color=PALETTE[c % len(PALETTE)],
                         label=class_names[c] if class_names else str(c)) for c in present]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10),
                      fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.06 if classes is not None else 0, 1, 1))
    return figure


def activation_grid_figure(acts: torch.Tensor, *, title: str = "", count: int = 64,
                           labels: dict[int, str] | None = None, image=None) -> Figure:
    """A layer's channels for one image ``(C, h, w)``: the ``count`` with the highest mean
    activation, strongest first, each titled with its unit (and label); the image first."""
    acts = acts.detach().float().cpu()
    order = acts.mean((1, 2)).argsort(descending=True, stable=True)[:count].tolist()
    panels = len(order) + (image is not None)
    columns = min(16, panels)
    rows = math.ceil(panels / columns)
    figure = Figure(figsize=(0.9 * columns, 1.0 * rows + 0.4))
    scale = float(acts[order].abs().max().clamp_min(1e-8))
    start = 1
    if image is not None:
        _image_axis(figure, rows, columns, 1, image, "image", size=6)
        start = 2
    for position, unit in enumerate(order):
        axis = figure.add_subplot(rows, columns, start + position)
        axis.imshow(acts[unit].numpy(), cmap="viridis", vmin=0, vmax=scale,
                    interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        text = f"{unit}" + (f" {labels[unit]}" if labels and labels.get(unit) else "")
        axis.set_title(text, fontsize=5.5)
    shown = f"{len(order)} of {acts.shape[0]} channels" if len(order) < acts.shape[0] else \
        f"{acts.shape[0]} channels"
    figure.suptitle(f"{title}: {shown}, by mean activation" if title else shown, fontsize=9)
    figure.tight_layout()
    return figure


def kernel_figure(slices: torch.Tensor, inputs: Sequence[int], patches: torch.Tensor | None,
                  *, title: str = "") -> Figure:
    """A unit's kernel over its strongest input channels: per row the ``(kh, kw)`` weights as a
    diverging heat map, then that input channel's top patches ``(K, m, 3, S, S)``."""
    count = len(inputs)
    extra = 0 if patches is None else patches.shape[1]
    columns = 1 + extra
    figure = Figure(figsize=(1.0 * columns + 0.8, 1.0 * count + 0.5))
    scale = float(slices.abs().max().clamp_min(1e-8))
    for row in range(count):
        axis = figure.add_subplot(count, columns, row * columns + 1)
        axis.imshow(slices[row].detach().float().cpu().numpy(), cmap="RdBu_r", vmin=-scale,
                    vmax=scale, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(f"in {inputs[row]}", fontsize=7, rotation=0, ha="right", va="center")
        for j in range(extra):
            _image_axis(figure, count, columns, row * columns + 2 + j, patches[row, j])
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure


def dimension_figure(profiles: dict[str, object], title: str = "") -> Figure:
    """Intrinsic dimension over layers: one panel per estimator, a line per model.

    ``profiles``: ``{model name: DataFrame}`` with the layers as index and one column per
    estimator (``dimension.profile``)."""
    methods = list(next(iter(profiles.values())).columns)
    figure = Figure(figsize=(4 * len(methods), 3.2))
    axes = figure.subplots(1, len(methods), squeeze=False)[0]
    for axis, method in zip(axes, methods):
        for index, (name, frame) in enumerate(profiles.items()):
            axis.plot(range(len(frame)), frame[method].to_numpy(), marker="o",
                      color=PALETTE[index % len(PALETTE)], label=name)
            axis.set_xticks(range(len(frame)))
            axis.set_xticklabels([str(layer).split(".")[-1] for layer in frame.index],
                                 rotation=45, fontsize=7)
        axis.set_title(method, fontsize=9)
        axis.set_ylabel("intrinsic dimension", fontsize=8)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def concept_patches_figure(groups: dict[str, torch.Tensor], renders: torch.Tensor | None, *,
                           title: str = "") -> Figure:
    """A polysemantic unit: a row of top patches per concept it detects, then a row of diverse
    feature visualizations (its facets)."""
    rows = len(groups) + (renders is not None)
    columns = max([len(p) for p in groups.values()] + ([len(renders)] if renders is not None
                                                        else []) + [1])
    figure = Figure(figsize=(1.05 * columns + 1.2, 1.15 * rows + 0.5))
    for row, (concept, crops) in enumerate(groups.items()):
        for j, crop in enumerate(crops):
            axis = _image_axis(figure, rows, columns, row * columns + j + 1, crop)
            if j == 0:
                axis.set_ylabel(concept, fontsize=7, rotation=0, ha="right", va="center")
    if renders is not None:
        for j, render in enumerate(renders):
            axis = _image_axis(figure, rows, columns, (rows - 1) * columns + j + 1, render)
            if j == 0:
                axis.set_ylabel("facets", fontsize=7, rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return figure
