"""Report sections about a model itself, for any model: its card, its predictions on the
images, its layers, its first-layer filters, and samples of the concept data it is checked on.

Each is a section function ``(model, data, options) -> Section`` like the families' ones.

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> layers_section(model, SectionData(torch.rand(1, 3, 32, 32)), SectionOptions()).title
    'Layers'
"""
from __future__ import annotations

import html

import torch
from torch import nn

from seethrough.core import model_device
from seethrough.errors import InputError
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html


def _card_table(model: nn.Module) -> str:
    card = dict(getattr(model, "card", {}))
    keep = {k: v for k, v in card.items() if k not in ("class_names", "confusion_matrix", "history")}
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in keep.items())
    rows += f"<tr><th>parameters</th><td>{sum(p.numel() for p in model.parameters()):,}</td></tr>"
    rows += f"<tr><th>classes</th><td>{len(getattr(model, 'class_names', None) or [])}</td></tr>"
    return f'<table class="table">{rows}</table>'


def model_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """The model's card (where it came from, how well it does) and its size."""
    return Section("Models", _card_table(model))


def predictions_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """The model's top classes on each image, with the true class when known."""
    from seethrough.viz.predictions import topk_figure

    with torch.no_grad():
        probabilities = model(data.images.to(model_device(model))).softmax(1).cpu()
    names = getattr(model, "class_names", None) or [str(i) for i in range(probabilities.shape[1])]
    titles = list(data.names)
    if data.labels is not None:
        titles = [f"true: {names[int(c)]}" for c in data.labels]
    k = min(5, len(names))
    return Section("Predictions", figure_html(
        topk_figure(data.images, probabilities, names, k=k, titles=titles),
        f"Top-{k} classes on the report's images"))


def layers_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Every layer with its type, output shape (at the images' size) and parameters."""
    from seethrough.core.layer_table import layers

    frame = layers(model, tuple(data.images.shape[1:])).to_frame()
    frame["output_shape"] = frame["output_shape"].map(
        lambda s: "x".join(map(str, s[1:])) if s else "-")
    body = f"<details><summary>{len(frame)} layers</summary>"
    body += table_html(frame[["name", "type", "output_shape", "parameters"]]) + "</details>"
    return Section("Layers", body)


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise InputError("the model has no Conv2d layer: no filters to show")


def filters_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """The filters of the first convolution, as colour patches (grey = 0)."""
    from seethrough.viz.weights import filters_figure

    name, conv = _first_conv(model)
    return Section("First-layer filters", figure_html(
        filters_figure(conv.weight, name.removeprefix("net.")),
        f"{name}: the {conv.weight.shape[0]} first-layer filters, grey = 0"))


def concepts_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Samples of the concept dataset with their per-pixel concept masks."""
    from seethrough.data.pictures import sample_grid

    if data.concepts is None:
        raise InputError("the concept data section needs a concept dataset (SectionData.concepts)")
    return Section("Concept data", figure_html(sample_grid(data.concepts, n=8),
                                               "Samples with their concept masks"))
