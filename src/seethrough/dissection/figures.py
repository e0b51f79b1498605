"""Figures of dissection results.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot): unique detectors per category and
layer, robustness curves, axis-alignment curves (mean +- std over rotations), the first PCA
loading of a concept, and strips of top-activating images with the unit's mask.

Example:
    >>> fig = detectors_figure(result)          # doctest: +SKIP
"""
from __future__ import annotations

import html

import numpy as np
import torch

from seethrough.dissection.result import Dissection

CATEGORY_COLOURS = {"colour": "#d62728", "shape": "#1f77b4", "texture": "#2ca02c",
                    "scene": "#9467bd", "object": "#ff7f0e", "part": "#8c564b",
                    "material": "#e377c2"}


def _colour(category: str, index: int) -> str:
    return CATEGORY_COLOURS.get(category, f"C{index}")


def counts_table(result: Dissection):
    """Unique detectors as a layer x category table, layers in network order."""
    counts = result.unique_detectors()
    table = counts.pivot(index="layer", columns="category", values="unique_detectors")
    table = table.reindex(index=list(result.layers), columns=list(result.vocabulary.categories))
    table.index = [name.replace("net.", "") for name in table.index]
    return table.rename_axis("layer").reset_index().rename_axis(None, axis=1)


def detectors_figure(result: Dissection, title: str = ""):
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

    from seethrough.dissection.experiments import summary

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


def unit_strip(model, result: Dissection, layer: str, unit: int, dataset, *, k: int = 4,
               size: int = 96) -> np.ndarray:
    """The unit's top-k images side by side, dimmed outside the unit's thresholded mask."""
    import torch.nn.functional as F

    from seethrough.dissection.run import layer_activations

    indices = [int(i) for i in result.layers[layer].top.indices[unit, :k]]
    images = torch.stack([torch.as_tensor(dataset[i]["image"]).float() for i in indices])
    acts = layer_activations(model, [layer], images)[layer][:, unit : unit + 1]
    up = F.interpolate(acts, size=images.shape[-2:], mode="bilinear", align_corners=False)
    mask = (up > float(result.layers[layer].thresholds[unit])).float()
    shown = images.clamp(0, 1) * (0.25 + 0.75 * mask)
    edge = (F.max_pool2d(mask, 3, 1, 1) - mask).clamp(0, 1)
    shown = shown * (1 - edge) + edge * torch.tensor([1.0, 0.9, 0.0])[:, None, None]
    shown = F.interpolate(shown, size=(size, size), mode="nearest")
    pad = torch.ones(len(indices), 3, size, 4)
    return torch.cat([torch.cat([s, p], -1) for s, p in zip(shown, pad)], -1).permute(1, 2, 0).numpy()


def best_units_html(model, result: Dissection, dataset, *, per_layer: int = 4, k: int = 4) -> str:
    """A table: for each layer's best units, concept, IoU and top images with their masks."""
    from seethrough.viz.html import png_data_uri

    rows = []
    frame = result.to_frame()
    for layer in result.layers:
        best = frame[frame.layer == layer].sort_values("iou", ascending=False).head(per_layer)
        for row in best.itertuples():
            strip = unit_strip(model, result, layer, int(row.unit), dataset, k=k)
            rows.append(
                f"<tr><td>{html.escape(layer.replace('net.', ''))}</td><td>{row.unit}</td>"
                f"<td>{html.escape(row.concept)}</td><td>{html.escape(row.category)}</td>"
                f"<td>{row.iou:.3f}</td><td><img src=\"{png_data_uri(strip)}\"></td></tr>")
    head = ("<tr><th>layer</th><th>unit</th><th>concept</th><th>category</th><th>IoU</th>"
            "<th>top images (mask bright, outline yellow)</th></tr>")
    return f'<table class="table">{head}{"".join(rows)}</table>'
