"""The feature visualization section of a report, for any image model.

For a few layers (``options.layers``, else three of the network's resolutions from the layer
table, spread from shallow to the deepest): the units that matter most for the classes the
model predicts on the images (gradient x activation), rendered by optimization (Olah et al.
2017) above the crops of the images where each unit fires most; the classes the model
predicts most on the images, rendered; with 64 images or more, the most predicted class's facets
(multifaceted visualization beside Lucid's diversity). DeepDream, inversion, texture and style
have their own section (``seethrough.featureviz.synthesis_section``).

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> data = SectionData(torch.rand(2, 3, 32, 32))
    >>> options = SectionOptions(quick=True, layers=["layer3"])
    >>> section(model, data, options, steps=2).title
    'Feature visualization'
"""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from seethrough.attribution.channels import channel_attribution
from seethrough.core import model_device
from seethrough.core.layer_table import layers_by_resolution, stage_layers
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.figures import channel_figure, row_html
from seethrough.featureviz.multifaceted import multifaceted
from seethrough.featureviz.render import visualize
from seethrough.represent import top_patches
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html

INTRO = ("<p>Images optimized to excite one unit (Olah et al. 2017): decorrelated Fourier "
         "parameterization, Lucid's transformation robustness, Adam 0.05, redirected ReLU gradient "
         "for the first 16 steps. Below each, the report's images where the unit fires most, "
         "cropped to the receptive field of the peak.</p>")

#: images the units are cropped from
CROP_IMAGES = 200
#: images the units are chosen on (by their importance for the predicted classes); also the
#: fewest images multifaceted visualization clusters
UNIT_IMAGES = FACET_IMAGES = 64

#: (layer) -> {unit: label}, e.g. the concept each unit detects (from a dissection)
UnitLabels = Callable[[str], dict[int, str] | None]


def important_channels(model: nn.Module, images: torch.Tensor, layer: str, count: int) -> list[int]:
    """The ``count`` units of ``layer`` that matter most for the classes the model predicts on
    ``images``: the largest mean gradient x activation of the predicted class's score."""
    scores = channel_attribution(model, images, layer, "predicted").scores.mean(0)
    return scores.topk(min(count, len(scores))).indices.tolist()


def _units_html(model, data, layers, steps, size, unit_labels) -> str:
    body = ""
    for layer in layers:
        channels = important_channels(model, data.images[:UNIT_IMAGES], layer, 6)
        result = visualize(model, obj.channel(layer, channels), steps=steps, size=size)
        patches = top_patches(model, layer, data.images, k=3, units=channels, size=min(size, 96),
                              progress=False)
        crops = [list(zip(patches.crops[j], patches.values[j].tolist(),
                          patches.indices[j].tolist())) for j in range(len(channels))]
        labels = unit_labels(layer) if unit_labels else None
        caption = (f"{layer}: the six units that matter most for the predicted classes (gradient "
                   f"x activation), rendered (top row; {steps} steps, {size} px) above the images "
                   "where each unit peaks, cropped to the true receptive field of the peak (grey: "
                   "outside the image; value = its max activation)"
                   + ("; under the unit number, the concept it detects (IoU > 0.04)" if labels else ""))
        short = layer.removeprefix("net.")
        body += figure_html(channel_figure(short, result.images, channels, crops, labels), caption)
    return body


def unit_facets(model: nn.Module, *, steps: int, size: int, count: int = 4):
    """``(layer, unit) -> (count, 3, size, size)``: diverse renderings of one unit (the channel
    objective plus Lucid's diversity term at weight 1e2, Olah et al. 2017), its facets."""
    def facets(layer: str, unit: int) -> torch.Tensor:
        objective = obj.channel(layer, unit) + 1e2 * obj.diversity(layer)
        return visualize(model, objective, batch=count, steps=steps, size=size).images
    return facets


def _facets_html(model: nn.Module, data: SectionData, steps: int, size: int) -> str:
    """The most predicted class two ways: multifaceted (grown from clusters of the images) and
    Lucid's diversity (no data); only with enough images to cluster."""
    if len(data.images) < FACET_IMAGES:
        return ""
    images = data.images[:FACET_IMAGES * 4]
    with torch.no_grad():
        predicted = model(images.to(model_device(model))).argmax(1).cpu()
    chosen = int(predicted.mode().values)
    names = getattr(model, "class_names", None) or []
    label = names[chosen] if chosen < len(names) else f"class {chosen}"
    facets = multifaceted(model, obj.class_logit(chosen), images, facets=4, steps=min(steps, 96))
    layer = stage_layers(model, tuple(images.shape[1:]))[-1]
    diverse = visualize(model, obj.class_logit(chosen) + 1e2 * obj.diversity(layer), batch=4,
                        steps=steps, size=size)
    sizes = facets.settings["cluster_sizes"]
    return (f"<h4>Facets of '{label}': multifaceted (Nguyen et al. 2016) and diversity (Olah et al. "
            "2017)</h4><p>Top: the mean of the 15 images nearest each cluster centre (k-means on "
            f"a t-SNE map of the {facets.settings['top']} images that excite the class most, "
            "described by the network's last stage); middle: each facet grown from its mean "
            "with a centre bias; bottom: the same class rendered four times from noise, pushed "
            "apart by the diversity term (weight 1e2) at the last stage.</p>"
            + row_html(facets.starts, [f"cluster {i}: {n} images" for i, n in enumerate(sizes)])
            + row_html(facets.images, [f"facet {i}" for i in range(len(sizes))])
            + row_html(diverse.images, [f"diversity {i}" for i in range(4)]))


def _classes_html(model, data, steps) -> str:
    with torch.no_grad():
        predicted = model(data.images.to(model_device(model))).argmax(1).cpu()
    classes = torch.unique(predicted, sorted=False)[:4].tolist()
    names = getattr(model, "class_names", None) or []
    result = visualize(model, obj.class_logit(classes), steps=steps,
                       size=min(128, data.images.shape[-1]))
    return "<h4>The predicted classes, rendered (logit)</h4>" + row_html(
        result.images, [f"{c}: {names[c]}" if c < len(names) else str(c) for c in classes])


def section(model: nn.Module, data: SectionData, options: SectionOptions, *,
            unit_labels: UnitLabels | None = None, steps: int | None = None) -> Section:
    """Feature visualization of ``model`` on ``data`` (see the module docstring).

    ``unit_labels(layer)`` names units under their rendering (e.g. the concept a dissection
    found); ``steps`` overrides the optimization steps (default 32 quick, 128 otherwise; units
    of small models get twice as many).
    """
    start = time.perf_counter()
    total = len(data.images)
    data = data.first(CROP_IMAGES)
    size = data.images.shape[-1]
    steps = steps or (32 if options.quick else 128)
    layers = options.layers or layers_by_resolution(model, tuple(data.images.shape[1:]), count=3)
    unit_steps = steps * 2 if size < 96 else steps
    body = INTRO + _units_html(model, data, layers, unit_steps, min(size, 112), unit_labels)
    timings = [f"units {time.perf_counter() - start:.0f} s"]
    body += _classes_html(model, data, steps)
    body += _facets_html(model, data, unit_steps, min(size, 112))
    timings.append(f"total {time.perf_counter() - start:.0f} s")
    notes = ["time: " + ", ".join(timings)]
    if total > len(data.images):
        notes.append(f"Units and crops come from the first {len(data.images)} of the {total} images.")
    return Section("Feature visualization", body, notes=notes)
