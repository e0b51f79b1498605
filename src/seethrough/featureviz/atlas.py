"""Activation atlas of a layer over a dataset (Carter et al. 2019, "Activation Atlas").

As in the paper: one activation vector per image at a random spatial position (seeded:
image ``i``'s position depends only on ``(seed, i)``), a 2-D layout of those vectors (UMAP by
default, with the paper's cosine metric, 20 neighbours and ``min_dist=0.01``; ``method="pca"``
is much faster), the layout's outliers clipped (1st-99th percentiles plus a 10 % margin, as
Lucid's notebook does) and the layout scaled to the unit square and cut into a ``grid x grid`` grid, and
the average activation of each cell with at least ``min_count`` members rendered with the
``direction`` objective (the paper uses a direction objective weighted by cosine similarity;
``cosine=True`` gives the pure cosine one).

Memory: the activations are read batch by batch through ``tally`` and the positions are sampled
inside each batch, so what is kept is ``(samples, C)``, never ``(N, C, H, W)``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    >>> atlas = activation_atlas(net, torch.rand(50, 3, 8, 8), "1", grid=4, method="pca",
    ...                          min_count=1, progress=False)
    >>> int(atlas.counts.sum())
    50
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.featureviz.views import layer_name, render_directions
from seethrough.results import Result

METHODS = ("umap", "pca")
#: umap-learn settings of the paper's layouts
UMAP_OPTIONS = {"n_neighbors": 20, "min_dist": 0.01, "metric": "cosine"}


def sample_positions(index: int, height: int, width: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct flat positions of an ``height x width`` map for image ``index``."""
    rng = np.random.default_rng([seed, index])
    return rng.choice(height * width, size=min(count, height * width), replace=False)


def _labels_of(batch, length: int) -> torch.Tensor | None:
    labels = batch.labels
    if isinstance(labels, dict):
        labels = labels.get("label")
    if isinstance(labels, torch.Tensor) and labels.ndim == 1 and len(labels) == length:
        return labels.long().cpu()
    return None


class SampledActivations:
    """A ``tally`` statistic: ``per_image`` random positions of each image's activation."""

    def __init__(self, layer: str, per_image: int, seed: int):
        self.layer, self.per_image, self.seed = layer, per_image, seed
        self.parts: list[dict[str, torch.Tensor]] = []

    def update(self, batch) -> None:
        acts = batch.acts[self.layer]
        if acts.ndim != 4:
            raise InputError(f"layer {self.layer!r} has no spatial dims (output "
                             f"{tuple(acts.shape)}): choose a convolutional layer")
        count, _, height, width = acts.shape
        flat = acts.detach().flatten(2)  # (N, C, H*W)
        rows, images, where = [], [], []
        for n, index in enumerate(batch.indices.tolist()):
            chosen = sample_positions(index, height, width, self.per_image, self.seed)
            rows.append(flat[n][:, torch.as_tensor(chosen, device=flat.device)].T)
            images.append(torch.full((len(chosen),), index, dtype=torch.long))
            where.append(torch.as_tensor(chosen, dtype=torch.long))
        images = torch.cat(images)
        labels = _labels_of(batch, count)
        labels = torch.full((len(images),), -1, dtype=torch.long) if labels is None else \
            labels.repeat_interleave(min(self.per_image, height * width))
        self.parts.append({"vectors": torch.cat(rows).float().cpu(), "images": images,
                           "positions": torch.cat(where), "labels": labels})

    def merge(self, other: SampledActivations) -> SampledActivations:
        self.parts.extend(other.parts)
        return self

    def state_dict(self) -> dict:
        return {"parts": self.parts}

    def load_state_dict(self, state: dict) -> None:
        self.parts = list(state["parts"])

    def result(self) -> dict[str, torch.Tensor]:
        return {key: torch.cat([part[key] for part in self.parts]) for key in self.parts[0]}


@dataclass
class Atlas(Result):
    """An activation atlas: sampled activations, their 2-D layout, and the grid's cells.

    Attributes:
        layer: the layer's name.
        grid: cells per side.
        activations: ``(M, C)`` the sampled activation vectors.
        layout: ``(M, 2)`` their positions, scaled to [0, 1] per axis.
        images, positions: ``(M,)`` the image index and flat spatial position of each sample.
        labels: ``(M,)`` each sample's image class (-1 where unknown).
        sample_cells: ``(M,)`` each sample's cell, ``row * grid + col`` (row 0 at the top).
        cells: ``(K,)`` the kept cells (those with at least ``min_count`` samples).
        counts: ``(K,)`` their sample counts; ``averages``: ``(K, C)`` their mean activation.
        renders: ``(K, 3, s, s)`` after ``visualize`` (zeros where a cell was not rendered).
    """

    layer: str
    grid: int
    activations: torch.Tensor
    layout: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    sample_cells: torch.Tensor
    cells: torch.Tensor
    counts: torch.Tensor
    averages: torch.Tensor
    class_names: list[str] | None = None
    renders: torch.Tensor | None = None
    rendered: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        return bool((self.labels >= 0).any())

    def cell_classes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(top class (K,), its share of the labelled members (K,))`` per kept cell."""
        top = torch.full((len(self.cells),), -1, dtype=torch.long)
        share = torch.zeros(len(self.cells))
        for k, cell in enumerate(self.cells.tolist()):
            members = self.labels[(self.sample_cells == cell) & (self.labels >= 0)]
            if len(members):
                tally = torch.bincount(members)
                top[k], share[k] = int(tally.argmax()), float(tally.max()) / len(members)
        return top, share

    def purity(self) -> float:
        """The count-weighted mean share of the top class in the kept cells (needs labels)."""
        if not self.has_labels:
            raise InputError("the atlas has no labels: give labels= or a labelled dataset")
        _, share = self.cell_classes()
        weights = self.counts.float()
        return float((share * weights).sum() / weights.sum())

    def visualize(self, model: nn.Module, *, steps: int = 256, cells=None,
                  batch_size: int = 64, cosine: bool = False, **options):
        """Render each kept cell's average activation with the ``direction`` objective.

        ``cells``: positions in ``cells`` (rows of ``to_frame``) to render; default all. They
        are rendered ``batch_size`` at a time, each batch one ``visualize`` call with one
        direction per item. Keeps the images in ``renders``; returns the ``Visualization`` of
        all of them (histories joined item-wise)."""
        from seethrough.featureviz.render import Visualization

        chosen = list(range(len(self.cells))) if cells is None else \
            [int(c) for c in torch.as_tensor(cells).flatten().tolist()]
        if not chosen or any(not 0 <= c < len(self.cells) for c in chosen):
            raise InputError(f"cells must be positions among the {len(self.cells)} kept cells")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
        results = [render_directions(model, self.layer, self.averages[chosen[i:i + batch_size]],
                                     steps=steps, cosine=cosine, **options)
                   for i in range(0, len(chosen), batch_size)]
        images = torch.cat([r.images.detach().cpu() for r in results])
        if self.renders is None or self.renders.shape[1:] != images.shape[1:]:
            self.renders = torch.zeros(len(self.cells), *images.shape[1:])
            self.rendered = torch.zeros(len(self.cells), dtype=torch.bool)
        self.renders[chosen] = images
        self.rendered[chosen] = True
        history = [[value for r in results for value in r.history[step]] for step in range(steps)]
        return Visualization(images, history, f"atlas cells of {self.layer}", results[0].settings)

    def to_frame(self):
        """One row per kept cell: its grid row and column, member count, and with labels its
        top class and that class's share of the members."""
        import pandas as pd

        cells = self.cells.tolist()
        frame = pd.DataFrame({"cell": cells, "row": [c // self.grid for c in cells],
                              "col": [c % self.grid for c in cells],
                              "count": self.counts.tolist()})
        if self.has_labels:
            top, share = self.cell_classes()
            frame["top_class"] = top.tolist()
            if self.class_names:
                frame["top_name"] = [self.class_names[t] if 0 <= t < len(self.class_names)
                                     else "" for t in top.tolist()]
            frame["top_share"] = share.tolist()
        return frame

    def plot(self):
        """The atlas: each rendered cell's image at its grid place; before ``visualize``, the
        layout's points coloured by class with the grid's kept cells shaded by count."""
        from matplotlib.figure import Figure

        from seethrough.results import image_uint8

        fig = Figure(figsize=(7, 7))
        ax = fig.add_subplot()
        if self.renders is not None and bool(self.rendered.any()):
            size = self.renders.shape[-1]
            canvas = np.full((self.grid * size, self.grid * size, 3), 255, dtype=np.uint8)
            for k, cell in enumerate(self.cells.tolist()):
                if self.rendered[k]:
                    row, col = divmod(cell, self.grid)
                    canvas[row * size:(row + 1) * size, col * size:(col + 1) * size] = \
                        image_uint8(self.renders[k])
            ax.imshow(canvas)
            ax.axis("off")
        else:
            density = np.full((self.grid, self.grid), np.nan)
            for cell, count in zip(self.cells.tolist(), self.counts.tolist()):
                density[cell // self.grid, cell % self.grid] = count
            ax.imshow(density, cmap="Greys", alpha=0.4, extent=(0, 1, 0, 1))
            colours = self.labels.numpy() if self.has_labels else "tab:blue"
            ax.scatter(self.layout[:, 0], self.layout[:, 1], c=colours, s=4, cmap="tab10")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        ax.set_title(f"activation atlas of {self.layer}: {len(self.cells)} cells", fontsize=10)
        fig.tight_layout()
        return fig

    def _title(self) -> str:
        return f"Atlas: {self.layer}, {len(self.cells)} cells"

    def _settings(self) -> dict:
        return {"layer": self.layer, "grid": self.grid, "class_names": self.class_names,
                "settings": self.settings}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"activations": self.activations, "layout": self.layout, "images": self.images,
                   "positions": self.positions, "labels": self.labels,
                   "sample_cells": self.sample_cells, "cells": self.cells, "counts": self.counts,
                   "averages": self.averages}
        if self.renders is not None:
            tensors.update(renders=self.renders, rendered=self.rendered)
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Atlas:
        t = tensors
        return cls(settings["layer"], int(settings["grid"]), t["activations"], t["layout"],
                   t["images"], t["positions"], t["labels"], t["sample_cells"], t["cells"],
                   t["counts"], t["averages"], settings.get("class_names"), t.get("renders"),
                   t.get("rendered"), dict(settings.get("settings", {})))


def grid_cells(layout: torch.Tensor, grid: int) -> torch.Tensor:
    """``(M,)`` cell ``row * grid + col`` of each point of a layout in [0, 1]^2 (row 0 at the
    top, i.e. the largest y)."""
    col = (layout[:, 0] * grid).floor().long().clamp(0, grid - 1)
    row = grid - 1 - (layout[:, 1] * grid).floor().long().clamp(0, grid - 1)
    return row * grid + col


def normalize_layout(layout: torch.Tensor, low: float = 1.0, high: float = 99.0,
                     margin: float = 0.1) -> torch.Tensor:
    """The layout clipped to its ``low``..``high`` percentiles widened by ``margin`` of their
    range, then scaled to [0, 1] per axis (Lucid's ``normalize_layout`` of the atlas notebook:
    a few outliers do not squeeze the rest into a few cells)."""
    points = layout.double().numpy()
    mins, maxs = np.percentile(points, low, axis=0), np.percentile(points, high, axis=0)
    spread = maxs - mins
    clipped = np.clip(points, mins - margin * spread, maxs + margin * spread)
    clipped = clipped - clipped.min(0)
    clipped = clipped / np.maximum(clipped.max(0), 1e-12)
    return torch.from_numpy(clipped).float()


def activation_atlas(model: nn.Module, images, layer: str, *, grid: int = 20,
                     method: str = "umap", min_count: int = 3, per_image: int = 1,
                     labels=None, seed: int = 0, batch_size: int = 64,
                     progress: bool | None = None, **embed_options) -> Atlas:
    """An activation atlas of ``layer`` over ``images`` (Carter et al. 2019).

    Args:
        model: any image model (left as it was).
        images: an ``(N, 3, H, W)`` tensor in [0, 1] or any dataset ``tally`` reads (a
            ConceptWorld, an ImageSet...); its samples' ``label`` becomes the class.
        layer: a convolutional layer.
        grid: cells per side of the grid over the layout (at least 2).
        method: the 2-D layout: ``"umap"`` (the paper's) or ``"pca"`` (fast).
        min_count: cells with fewer samples are left empty (the paper drops sparse cells).
        per_image: random spatial positions sampled per image (the paper: 1).
        labels: ``(N,)`` class of each image, overriding the dataset's.
        seed: seeds the positions and the layout.
        embed_options: go to ``seethrough.represent.embed`` (UMAP: the paper's
            ``n_neighbors=20, min_dist=0.01, metric="cosine"`` unless given).
    """
    from seethrough.data.concepts import unwrap
    from seethrough.represent.maps import embed
    from seethrough.tallying import tally

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    for name, value, least in (("grid", grid, 2), ("min_count", min_count, 1),
                               ("per_image", per_image, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise InputError(f"{name} must be an integer of at least {least}, not {value!r}")
    if labels is not None:
        given = torch.as_tensor(labels).long().flatten()
        if len(given) != len(unwrap(images)):
            raise InputError(f"labels has {len(given)} entries for {len(unwrap(images))} images")
    name = layer_name(model, layer)
    stat = SampledActivations(name, per_image, seed)
    tally(model, [name], images, {"atlas": stat}, batch_size=batch_size, progress=progress,
          settings={"per_image": per_image, "seed": seed}, desc="atlas")
    found = stat.result()
    vectors = found["vectors"]
    if labels is not None:
        found["labels"] = given[found["images"]]
    if len(vectors) < 3:
        raise InputError(f"the atlas needs at least 3 samples, got {len(vectors)}")
    options = {**UMAP_OPTIONS, **embed_options} if method == "umap" else embed_options
    layout = torch.from_numpy(np.asarray(embed(vectors, method, seed=seed, **options))).float()
    layout = normalize_layout(layout)
    sample_cells = grid_cells(layout, grid)
    occupied, counts = torch.unique(sample_cells, return_counts=True)
    keep = counts >= min_count
    cells, counts = occupied[keep], counts[keep]
    averages = torch.zeros(len(cells), vectors.shape[1])
    averages.index_add_(0, torch.searchsorted(cells, sample_cells[torch.isin(sample_cells, cells)]),
                        vectors[torch.isin(sample_cells, cells)])
    averages /= counts[:, None].float()
    class_names = getattr(model, "class_names", None) or getattr(images, "class_names", None)
    return Atlas(name, grid, vectors, layout, found["images"], found["positions"],
                 found["labels"], sample_cells, cells, counts, averages,
                 list(class_names) if class_names else None,
                 settings={"method": method, "min_count": min_count, "per_image": per_image,
                           "seed": seed, "samples": len(vectors)})
