"""Report sections about the models themselves: cards, predictions, layers, first-layer filters,
and the ConceptWorld data they are checked on."""
from __future__ import annotations

import html

import torch

from seethrough.report.html import Section, figure_html, table_html


def _card_rows(model) -> str:
    card = dict(getattr(model, "card", {}))
    keep = {k: v for k, v in card.items() if k not in ("class_names", "confusion_matrix", "history")}
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in keep.items()
    )
    parameters = sum(p.numel() for p in model.parameters())
    rows += f"<tr><th>parameters</th><td>{parameters:,}</td></tr>"
    rows += f"<tr><th>classes</th><td>{len(model.class_names or [])}</td></tr>"
    return f'<table class="table">{rows}</table>'


def models_section(context) -> Section:
    body = "<h3>MobileNetV2 (ImageNet)</h3>" + _card_rows(context.imagenet_model)
    body += "<h3>ConceptNet (trained on ConceptWorld)</h3>" + _card_rows(context.conceptnet)
    body += "<h3>ConceptNet cheater (trained on the biased world)</h3>" + _card_rows(context.cheater)
    return Section("Models", body)


def predictions_section(context) -> Section:
    from seethrough.viz.predictions import topk_figure

    model = context.imagenet_model
    images, names = context.photos
    with torch.no_grad():
        probabilities = model(images).softmax(1)
    body = figure_html(topk_figure(images, probabilities, model.class_names, titles=names),
                       "MobileNetV2: top-5 ImageNet classes on scikit-image's sample photos")
    world = context.conceptworld(length=8)
    samples = world.batch()
    batch = samples["image"]
    truth = [world.class_names[label] for label in samples["label"].tolist()]
    with torch.no_grad():
        probabilities = context.conceptnet(batch).softmax(1)
    body += figure_html(
        topk_figure(batch, probabilities, context.conceptnet.class_names, k=3,
                    titles=[f"true: {t}" for t in truth]),
        "ConceptNet: top-3 classes on ConceptWorld validation images",
    )
    return Section("Predictions", body)


def layers_section(context) -> Section:
    from seethrough.core.layer_table import layers

    body = ""
    for title, model in (("ConceptNet", context.conceptnet), ("MobileNetV2", context.imagenet_model)):
        frame = layers(model).to_frame()
        frame["output_shape"] = frame["output_shape"].map(
            lambda s: "x".join(map(str, s[1:])) if s else "-")
        body += f"<h3>{title}</h3><details><summary>{len(frame)} layers</summary>"
        body += table_html(frame[["name", "type", "output_shape", "parameters"]]) + "</details>"
    return Section("Layers", body)


def _first_conv(model) -> tuple[str, torch.nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            return name, module
    raise ValueError("model has no Conv2d layer")


def filters_section(context) -> Section:
    from seethrough.viz.weights import filters_figure

    body = ""
    for title, model in (("MobileNetV2", context.imagenet_model), ("ConceptNet", context.conceptnet)):
        name, conv = _first_conv(model)
        body += figure_html(filters_figure(conv.weight, f"{title}: {name}"),
                            f"{title}: first-layer filters ({conv.weight.shape[0]}), grey = 0")
    return Section("First-layer filters", body)


def conceptworld_section(context) -> Section:
    from seethrough.data.pictures import sample_grid

    world = context.conceptworld(length=16)
    biased = context.conceptworld(length=16, bias=1.0)
    body = figure_html(sample_grid(world, n=8), "ConceptWorld samples with their concept masks")
    body += figure_html(sample_grid(biased, n=8),
                        "The biased world: a corner mark whose colour gives away the class")
    return Section("ConceptWorld", body)
