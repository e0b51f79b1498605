"""The Network Dissection section of a report, for any model with a concept dataset.

Dissects ``options.layers`` (else one layer per resolution from the layer table) on
``data.concepts``: unique detectors per category, the best units with their top images and
masks, the counts table; unless quick, the critiques' experiments on the deepest layers
(robustness to noise, rotation and shuffled patches; random rotations of the units; the PCA of
the best unit's concept).

Example:
    >>> import torchvision
    >>> from seethrough.data import ConceptWorld
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> world = ConceptWorld("val", length=8, size=64)
    >>> data = SectionData(world.batch()["image"], concepts=world)
    >>> section(model, data, SectionOptions(quick=True, layers=["layer2"])).title
    'Network Dissection'
"""
from __future__ import annotations

import html

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core.layer_table import layers_by_resolution
from seethrough.dissection.experiments import axis_alignment, concept_pca, robustness
from seethrough.dissection.figures import (
    axis_figure,
    counts_table,
    detectors_figure,
    pca_figure,
    robustness_figure,
)
from seethrough.dissection.result import Dissection
from seethrough.dissection.run import dissect, layer_activations
from seethrough.errors import InputError
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, png_data_uri, table_html

#: the critiques' perturbations, at the levels the report shows
PERTURBATIONS = (("noise", (1, 5, 10, 100)), ("rotation", (10, 45, 90)), ("shuffle", (4, 8)))


def unit_labels(result: Dissection, layer: str) -> dict[int, str]:
    """``{unit: "concept (IoU)"}`` of a layer's detector units, for labelling pictures."""
    frame = result.to_frame()
    return {int(r.unit): f"{r.concept} ({r.iou:.2f})" for r in frame[frame.layer == layer].itertuples()
            if r.detector}


def unit_concepts(model, dataset, **options):
    """``layer -> (IoU (units, concepts), concept names, {name: (category, label)})``: a
    function that dissects one layer of ``model`` on the concept ``dataset`` when called (for
    the polysemantic units of ``seethrough.represent``)."""
    def concepts(layer: str):
        found = dissect(model, [layer], dataset, cache=False, progress=False, **options)
        return found.iou(layer), found.vocabulary.names, found.concepts()
    return concepts


def unit_strip(model, result: Dissection, layer: str, unit: int, dataset, *, k: int = 4,
               size: int = 96) -> np.ndarray:
    """The unit's top-k images side by side, dimmed outside the unit's thresholded mask."""
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


def _experiments_html(model, layers, world, options, run) -> str:
    from torch.utils.data import Subset

    small = Subset(world, range(min(len(world), 48 if options.quick else 200)))
    tested = layers[-2:]
    figures = [figure_html(robustness_figure(robustness(model, tested, small, kind=kind,
                                                        levels=levels, **run)))
               for kind, levels in PERTURBATIONS]
    body = "<h4>Do detectors survive noise, rotation and shuffled patches?</h4>"
    body += '<div class="grid">' + "".join(figures) + "</div>"
    last = layers[-1]
    fractions = (0, 0.5, 1.0) if options.quick else (0, 0.25, 0.5, 0.75, 1.0)
    axis = axis_alignment(model, last, small, fractions=fractions, draws=2 if options.quick else 4,
                          **run)
    body += "<h4>Are the units special? Random rotations of the last layer</h4>"
    body += figure_html(axis_figure(axis), f"{last}: thresholds recomputed for the rotated units; "
                        "mean +- std over random rotations")
    return body


def section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Network Dissection of ``model`` on ``data.concepts`` (see the module docstring)."""
    world = data.concepts
    if world is None:
        raise InputError("the dissection section needs a concept dataset (SectionData.concepts)")
    size = tuple(world[0]["image"].shape)
    layers = options.layers or layers_by_resolution(model, size)
    run = {"batch_size": 48, "progress": options.progress}
    result = dissect(model, layers, world, **run)
    body = figure_html(detectors_figure(result), f"{len(world)} images at {size[-1]} px, "
                       "quantile 0.005, IoU > 0.04")
    body += best_units_html(model, result, world, per_layer=3)
    body += table_html(counts_table(result))
    if not options.quick:
        body += _experiments_html(model, list(result.layers), world, options, run)
        frame = result.to_frame()
        top = frame[frame.layer == layers[-1]].sort_values("iou", ascending=False).iloc[0]
        pca = concept_pca(model, top.layer, world, top.concept, category=top.category,
                          progress=options.progress)
        body += figure_html(pca_figure(pca), f"PCA of {top.layer} activations (units standardized "
                            f"over the dataset) at '{top.concept}' pixels; best single unit by IoU: "
                            f"{top.unit}")
    frame = result.to_frame()
    best = frame[frame.detector].sort_values("iou", ascending=False).head(5)
    facts = {"detectors": int(frame.detector.sum()), "units": len(frame),
             "top": [{"layer": r.layer, "unit": int(r.unit), "concept": r.concept,
                      "category": r.category, "iou": float(r.iou)} for r in best.itertuples()]}
    return Section("Network Dissection", body, facts=facts,
                   tables={"dissection": frame.to_dict("records")})
