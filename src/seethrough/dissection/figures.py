"""Figures of dissection results.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot): unique detectors per category and
layer, robustness curves, axis-alignment curves (mean +- std over rotations), the first PCA
loading of a concept, and strips of top-activating images with the unit's mask.

Example:
    >>> fig = detectors_figure(result)          # doctest: +SKIP
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Dissected(Protocol):
    """What the figures read of a dissection result (``Dissection``)."""

    layers: dict
    vocabulary: object
    iou_threshold: float

    def unique_detectors(self): ...


CATEGORY_COLOURS = {"colour": "#d62728", "shape": "#1f77b4", "texture": "#2ca02c",
                    "scene": "#9467bd", "object": "#ff7f0e", "part": "#8c564b",
                    "material": "#e377c2"}


def _colour(category: str, index: int) -> str:
    return CATEGORY_COLOURS.get(category, f"C{index}")


def counts_table(result: Dissected):
    """Unique detectors as a layer x category table, layers in network order."""
    counts = result.unique_detectors()
    table = counts.pivot(index="layer", columns="category", values="unique_detectors")
    table = table.reindex(index=list(result.layers), columns=list(result.vocabulary.categories))
    table.index = [name.replace("net.", "") for name in table.index]
    return table.rename_axis("layer").reset_index().rename_axis(None, axis=1)


def detectors_figure(result: Dissected, title: str = ""):
    """Grouped bars: unique detectors per category for each layer."""
    from matplotlib.figure import Figure

    counts = result.unique_detectors()
    layers = list(result.layers)
    categories = list(result.vocabulary.categories)
    fig = Figure(figsize=(1.2 + 1.1 * len(layers), 3.0))
    ax = fig.add_subplot()
    width = 0.8 / len(categories)
    for i, category in enumerate(categories):
        values = [int(counts[(counts.layer == layer) & (counts.category == category)]
                      .unique_detectors.iloc[0]) for layer in layers]
        ax.bar(np.arange(len(layers)) + (i - (len(categories) - 1) / 2) * width, values, width,
               label=category, color=_colour(category, i))
    ax.set_xticks(range(len(layers)), [layer.replace("net.", "") for layer in layers],
                  rotation=20, fontsize=8)
    ax.set_ylabel("unique detectors")
    ax.set_title(title or f"unique detectors (IoU > {result.iou_threshold})", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def robustness_figure(frame, title: str = ""):
    """Unique detectors (all categories) against the perturbation level, one line per layer."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 3.0))
    ax = fig.add_subplot()
    total = frame.groupby(["level", "layer"], sort=False).unique_detectors.sum().reset_index()
    levels = sorted(total.level.unique())
    for i, (layer, part) in enumerate(total.groupby("layer", sort=False)):
        part = part.set_index("level").reindex(levels)
        ax.plot(range(len(levels)), part.unique_detectors, "o-", label=layer.replace("net.", ""),
                color=f"C{i}")
    kind = frame.experiment.iloc[0]
    names = {"noise": "k in x + k U[0,1]", "rotation": "rotation (degrees)",
             "shuffle": "patch grid (n x n)"}
    ax.set_xticks(range(len(levels)), ["orig." if v == 0 else str(v) for v in levels])
    ax.set_xlabel(names.get(kind, "level"))
    ax.set_ylabel("unique detectors")
    ax.set_title(title or f"robustness to {kind}", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def axis_figure(frame, title: str = ""):
    """Mean +- std unique detectors per category against the rotation fraction."""
    from matplotlib.figure import Figure


    table = summary(frame, "fraction")
    fig = Figure(figsize=(4.2, 3.0))
    ax = fig.add_subplot()
    for i, (category, part) in enumerate(table.groupby("category", sort=False)):
        ax.errorbar(part.fraction, part["mean"], yerr=part["std"], fmt="o-", capsize=3,
                    label=category, color=_colour(category, i))
    ax.set_xlabel("rotation fraction (Q ** fraction)")
    ax.set_ylabel("unique detectors")
    ax.set_title(title or "axis alignment: random rotations of the units", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def pca_figure(pca, top: int = 20):
    """The first principal loading's largest units, and the explained variance ratios."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.8))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    loading = pca.loading.abs().numpy()
    order = np.argsort(-loading)[:top]
    ax.bar(range(len(order)), loading[order], color=["#d62728"] + ["#7f7f7f"] * (len(order) - 1))
    ax.set_xticks(range(len(order)), [str(u) for u in order], fontsize=6, rotation=90)
    ax.set_xlabel("unit")
    ax.set_ylabel("|first loading|")
    ax.set_title(f"{pca.concept} at {pca.layer.replace('net.', '')}: top unit holds "
                 f"{pca.top_share:.0%} of the loading, ~{pca.effective_units:.0f} units share it",
                 fontsize=8)
    ax2.bar(range(1, len(pca.explained) + 1), pca.explained.numpy(), color="#1f77b4")
    ax2.set_xticks(range(1, len(pca.explained) + 1))
    ax2.set_xlabel("component")
    ax2.set_ylabel("explained var.")
    fig.tight_layout()
    return fig


def summary(frame, by: str):
    """Mean and std of unique detectors over draws per ``by`` and category."""
    grouped = frame.groupby([by, "category"]).unique_detectors
    out = grouped.agg(["mean", "std"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out
