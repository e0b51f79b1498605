"""Figures of dissection results and the "dissection" report section.

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


def default_layers(model, input_size=None, *, activations=("ReLU", "ReLU6", "SiLU", "Hardswish",
                                                          "GELU")) -> list[str]:
    """One layer per spatial resolution: its last activation module (else its last module)."""
    from seethrough.core.layer_table import layers

    shape = input_size or getattr(model, "input_size", (3, 224, 224))
    chosen: dict[tuple, str] = {}
    for row in layers(model, shape).rows:
        out = row.output_shape
        if not out or len(out) != 4 or out[-1] == shape[-1]:
            continue
        if row.type in activations or out[-2:] not in chosen:
            chosen[out[-2:]] = row.name
    return list(chosen.values())


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
    from seethrough.report.html import png_data_uri

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


# -- the report section --------------------------------------------------------------------------
CONCEPTNET_LAYERS = ["features.block3", "features.block4", "features.block5"]
IMAGENET_LAYERS = ["features.3", "features.6", "features.10", "features.13", "features.16"]
IMAGENET_SIZE = 112  # MobileNetV2 dissected on ConceptWorld at 112 px to keep it fast


def dissection_section(context):
    """Network Dissection of ConceptNet and MobileNetV2 on ConceptWorld, and the experiments."""
    from seethrough.data import ConceptWorld
    from seethrough.dissection import dissect
    from seethrough.dissection.experiments import axis_alignment, concept_pca, robustness
    from seethrough.errors import SeethroughError
    from seethrough.report.html import Section, figure_html, table_html

    quick = context.quick
    length = 120 if quick else 400
    notes, body = [], []
    options = {"batch_size": 48, "progress": False}
    try:
        conceptnet = context.conceptnet
    except (ImportError, SeethroughError) as error:  # no weights yet: dissect what we can
        conceptnet = None
        notes.append(f"ConceptNet unavailable ({error}); only MobileNetV2 is dissected.")
    world = ConceptWorld("val", length=length, size=64)

    if conceptnet is not None:
        layers = CONCEPTNET_LAYERS
        result = dissect(conceptnet, layers, world, **options)
        body.append("<h3>ConceptNet on ConceptWorld</h3>")
        body.append(figure_html(detectors_figure(result, "ConceptNet: unique detectors per "
                                                          "category"),
                                f"{length} validation images at 64 px, quantile 0.005, IoU > 0.04"))
        body.append(best_units_html(conceptnet, result, world, per_layer=3))
        body.append(table_html(counts_table(result)))
        last = layers[-1]
        frame = result.to_frame()
        body.append("<h4>Do detectors survive noise, rotation and shuffled patches?</h4>")
        small = ConceptWorld("val", length=48 if quick else 200, size=64)
        tested = layers[-2:] if quick else layers
        figures = []
        for kind, levels in (("noise", (1, 5, 10, 100)), ("rotation", (10, 45, 90)),
                             ("shuffle", (4, 8))):
            figures.append(figure_html(robustness_figure(
                robustness(conceptnet, tested, small, kind=kind, levels=levels, **options))))
        body.append('<div class="grid">' + "".join(figures) + "</div>")
        body.append("<h4>Are the units special? Random rotations of the last layer</h4>")
        fractions = (0, 0.5, 1.0) if quick else (0, 0.25, 0.5, 0.75, 1.0)
        axis = axis_alignment(conceptnet, last, small, fractions=fractions,
                              draws=2 if quick else 4, batch_size=48)
        body.append(figure_html(axis_figure(axis), f"{last}: thresholds recomputed for the "
                                            "rotated units; mean +- std over random rotations"))
        top = frame[frame.layer == last].sort_values("iou", ascending=False).iloc[0]
        pca = concept_pca(conceptnet, last, small, top.concept, category=top.category)
        body.append(figure_html(pca_figure(pca), f"PCA of standardized {last} activations at "
                                f"'{top.concept}' pixels; best single unit by IoU: {top.unit}"))

    mobilenet = context.imagenet_model
    world_big = ConceptWorld("val", length=60 if quick else 200, size=IMAGENET_SIZE)
    result = dissect(mobilenet, IMAGENET_LAYERS, world_big, **options)
    body.append(f"<h3>ImageNet MobileNetV2 on ConceptWorld ({IMAGENET_SIZE} px)</h3>")
    body.append(figure_html(detectors_figure(result, "MobileNetV2: unique detectors per category"),
                            f"{len(world_big)} images at {IMAGENET_SIZE} px"))
    body.append(best_units_html(mobilenet, result, world_big, per_layer=2))
    body.append(table_html(counts_table(result)))
    return Section("Network Dissection", "\n".join(body), notes=notes)
