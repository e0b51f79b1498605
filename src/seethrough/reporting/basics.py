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
from seethrough.viz.html import figure_html, table_html, thumbnails_html


def _is_matrix(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) > 1
            and all(isinstance(row, (list, tuple)) and len(row) == len(value) for row in value))


def _card_value(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_card_value(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 12:
        return ", ".join(map(str, value[:12])) + f", ... ({len(value)} in all)"
    if isinstance(value, (list, tuple)):
        return ", ".join(_card_value(v) for v in value)
    return str(value)


def confusion_figure(matrix, class_names: list[str] | None, title: str):
    """A confusion matrix as a heat map: true class per row, predicted per column, counts."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=float)
    names = class_names if class_names and len(class_names) == len(counts) else \
        [str(i) for i in range(len(counts))]
    figure = Figure(figsize=(1.6 + 0.42 * len(counts), 1.2 + 0.38 * len(counts)))
    ax = figure.add_subplot()
    shown = counts / counts.sum(1, keepdims=True).clip(min=1)
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    if len(counts) <= 20:
        for i in range(len(counts)):
            for j in range(len(counts)):
                if counts[i, j]:
                    ax.text(j, i, f"{counts[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(counts)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(counts)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def _card_html(model: nn.Module) -> str:
    card = dict(getattr(model, "card", {}))
    class_names = getattr(model, "class_names", None)
    matrices = {k: v for k, v in card.items() if _is_matrix(v)}
    keep = {k: v for k, v in card.items()
            if k not in ("class_names", "history") and k not in matrices}
    rows = "".join(f"<tr><th>{html.escape(str(k).replace('_', ' '))}</th>"
                   f"<td>{html.escape(_card_value(v))}</td></tr>" for k, v in keep.items())
    rows += f"<tr><th>parameters</th><td>{sum(p.numel() for p in model.parameters()):,}</td></tr>"
    rows += f"<tr><th>classes</th><td>{len(class_names or [])}</td></tr>"
    body = f'<div class="scroll"><table class="table">{rows}</table></div>'
    for key, matrix in matrices.items():
        title = key.replace("_", " ")
        body += figure_html(confusion_figure(matrix, class_names, title),
                            f"{title}: rows are the true classes, columns the predicted ones; "
                            "shade = share of the row")
    return body


def model_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """The model's card (where it came from, how well it does; confusion matrices as heat maps)
    and its size."""
    parameters = sum(p.numel() for p in model.parameters())
    return Section("Models", _card_html(model), facts={"parameters": parameters})


#: images shown with their top-5 classes; the rest are thumbnails
TOP_SHOWN = 6


def predictions_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """The model's top classes on the first images, a thumbnail of every image with its top
    class, and the accuracy and confusions when the true classes are known."""
    import pandas as pd

    from seethrough.viz.predictions import topk_figure

    probabilities = []
    with torch.no_grad():
        for start in range(0, len(data.images), 64):
            batch = data.images[start:start + 64].to(model_device(model))
            probabilities.append(model(batch).softmax(1).cpu())
    probabilities = torch.cat(probabilities)
    names = getattr(model, "class_names", None) or [str(i) for i in range(probabilities.shape[1])]
    top, classes = probabilities.max(1)
    shown = min(TOP_SHOWN, len(data.images))
    titles = list(data.names[:shown])
    if data.labels is not None:
        titles = [f"{t} (true: {names[int(c)]})" if int(c) >= 0 else t
                  for t, c in zip(titles, data.labels)]
    k = min(5, len(names))
    body = figure_html(topk_figure(data.images[:shown], probabilities[:shown], names, k=k,
                                   titles=titles), f"Top-{k} classes of the first {shown} images")
    frame = pd.DataFrame({"image": data.names, "predicted": [names[int(c)] for c in classes],
                          "probability": top.tolist()})
    facts = {"images": len(data.images),
             "top_classes": frame.predicted.value_counts().head(5).to_dict()}
    if data.labels is not None:
        known = data.labels >= 0
        frame["true"] = [names[int(c)] if int(c) >= 0 else "" for c in data.labels]
        if known.any():
            accuracy = float((classes[known] == data.labels[known]).float().mean())
            facts["accuracy"] = accuracy
            body += (f"<p>Accuracy on the {int(known.sum())} images with a true class: "
                     f"<strong>{accuracy:.1%}</strong>.</p>")
            used = sorted(set(data.labels[known].tolist()) | set(classes[known].tolist()))
            if len(used) <= 30:
                index = {c: i for i, c in enumerate(used)}
                matrix = torch.zeros(len(used), len(used))
                for t, p_ in zip(data.labels[known].tolist(), classes[known].tolist()):
                    matrix[index[t], index[p_]] += 1
                body += figure_html(confusion_figure(matrix.tolist(), [names[c] for c in used],
                                                     "confusions on these images"),
                                    "Rows: true class; columns: predicted class; counts")
    if len(data.images) > shown:
        body += (f"<h3>Every image ({len(data.images)})</h3>"
                 + thumbnails_html(data.images, [f"{n}: {names[int(c)]} {p:.0%}" for n, c, p in
                                                 zip(data.names, classes, top.tolist())]))
    return Section("Predictions", body, facts=facts, tables={"predictions": frame.to_dict("records")})


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
