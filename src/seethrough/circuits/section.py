"""The circuits and universality sections of a report, for any image model.

``section`` (Circuits): for two units of a deep layer, their strongest positive and negative
inputs from the layer before, each with its feature visualization and spatial weight map
(``circuit_figure``); then an edit with a measured effect: the channels of the last stage that
carry the decisions (channel attribution) switched off, beside as many random channels. With
``data.extra["cue"]`` (a model that learned a shortcut cue, see ``circuits.cue``) the cue's
channels switched off where the cue lies. With ``data.extra["handmade"]`` the network written by
hand and what seethrough's tools recover of its design.

``universality_section`` (Universality): linear CKA between every pair of stages of the model
and of each model in ``data.extra["compare"]`` (the model with itself when none), and for
models of the same architecture, unit matching at the last stage (Li et al. 2015).

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=3).eval()
    >>> data = SectionData(torch.rand(8, 3, 64, 64))
    >>> universality_section(model, data, SectionOptions(quick=True)).title
    'Universality'
"""
from __future__ import annotations

import html

import torch
from torch import nn

from seethrough.circuits.edit import Off, effect
from seethrough.core.layer_table import stage_layers
from seethrough.errors import SeethroughError
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

#: share of the last stage's channels switched off in the edit
EDIT_SHARE = 0.1
#: correlation above which a unit counts as having a partner (unit matching)
PARTNER_R = 0.5


def _circuit_layer(model: nn.Module, stages: list[str]) -> str:
    """A deep stage that reads another stage: about two thirds of the way."""
    return stages[max(1, round(len(stages) * 2 / 3) - 1)]


def _top_units(model: nn.Module, layer: str, images: torch.Tensor, count: int) -> list[int]:
    """The units of ``layer`` most active on the images (mean over images and positions)."""
    from seethrough.trace import capture

    acts = capture(model, images, layer)[layer].output
    mean = acts.float().flatten(2).mean(2).mean(0) if acts.dim() > 2 else acts.float().mean(0)
    return mean.argsort(descending=True)[:count].tolist()


def _circuits_html(model: nn.Module, data: SectionData, options: SectionOptions,
                   stages: list[str]) -> str:
    from seethrough.circuits.figures import circuit_figure

    layer = _circuit_layer(model, stages)
    before = stages[stages.index(layer) - 1]
    units = _top_units(model, layer, data.images[:32], 1 if options.quick else 2)
    body = ""
    for unit in units:
        figure = circuit_figure(model, layer, unit, inputs_layer=before,
                                count=2 if options.quick else 3,
                                steps=32 if options.quick else 128)
        body += figure_html(figure, f"{layer} unit {unit} (among the most active on these "
                            f"images) and its strongest inputs from the stage before, {before}: "
                            "each input's feature visualization and its spatial weight map (red "
                            "excites, blue inhibits; expanded weights where the stages are "
                            "further apart than one convolution).")
    return body


def _edit_html(model: nn.Module, data: SectionData, options: SectionOptions,
               stages: list[str]) -> tuple[str, dict, dict]:
    """The last stage's decision channels switched off, beside random channels."""
    from seethrough.attribution.channels import channel_attribution

    layer = stages[-1]
    images = data.images
    labels = data.labels
    truth = "true classes"
    if labels is None:
        with torch.no_grad():
            labels = model(images).argmax(1).cpu()
        truth = "the unedited model's own predictions"
    scores = channel_attribution(model, images, layer, labels.to(images.device)).scores
    channels = scores.shape[1]
    count = max(1, round(EDIT_SHARE * channels))
    top = scores.mean(0).argsort(descending=True)[:count].tolist()
    generator = torch.Generator().manual_seed(options.seed)
    random = torch.randperm(channels, generator=generator)[:count].tolist()
    names = getattr(model, "class_names", None)
    made = effect(model, Off(layer, top), images, labels, class_names=names,
                  title=f"{count} decision channels of {layer} off")
    control = effect(model, Off(layer, random), images, labels, class_names=names)
    both = made.table.rename(columns={"accuracy_after": "accuracy, decision channels off",
                                      "logit_change": "own logit change"})
    both["accuracy, random channels off"] = control.table["accuracy_after"]
    both["own logit change, random"] = control.table["logit_change"]
    overall = both[both["class"] == "all"].iloc[0]
    body = (f"<p>Editing with a measured effect: the {count} channels of {layer} ({EDIT_SHARE:.0%}) "
            f"with the largest mean channel attribution (gradient x activation of each image's "
            f"class) switched off, beside {count} random channels, on {len(images)} images "
            f"scored against {truth}. Accuracy {overall['accuracy_before']:.2f} → "
            f"{overall['accuracy, decision channels off']:.2f} (random: "
            f"{overall['accuracy, random channels off']:.2f}).</p>")
    body += figure_html(made.figure(), "Per class: accuracy before and after, and the mean "
                        "change of each class's own logit on its images.")
    body += table_html(both)
    facts = {"edit_layer": layer, "edit_channels": count,
             "edit_accuracy_before": round(float(overall["accuracy_before"]), 3),
             "edit_accuracy_after": round(float(overall["accuracy, decision channels off"]), 3),
             "edit_accuracy_random": round(float(overall["accuracy, random channels off"]), 3)}
    return body, facts, {"edit_effect": both.to_dict("records")}


def _cue_html(model: nn.Module, cue: dict, stages: list[str]) -> tuple[str, dict, dict]:
    from seethrough.circuits.cue import cue_edit

    result = cue_edit(model, stages, cue["biased"], cue["unbiased"], honest=cue.get("honest"),
                      without_cue=cue.get("without_cue"))
    best = result.best_layer()
    rows = result.table[result.table["layer"] == best]
    quarter = rows[rows["share"] == 0.25].iloc[0]
    references = "; ".join(f"{name} {value:.2f}" for name, value in result.references.items())
    body = (f"<p>The shortcut cue's channels: each stage's channels ranked by their channel "
            f"attribution on the cue's pixels ({len(cue['biased']['image'])} images where the "
            f"cue tells the class), then the top ones switched off where the cue lies, on "
            f"{len(cue['unbiased']['image'])} images whose cue colour is random. Unedited "
            f"accuracy {result.before:.2f}; at {best}, a quarter of the channels "
            f"({int(quarter['channels'])}) off: {quarter['cue_channels_off']:.2f}, against "
            f"{quarter['random_off_mean']:.2f} for random channels. References: "
            f"{html.escape(references)}. The cheater cannot do better than its accuracy "
            f"without a cue: it learned little of the shapes.</p>")
    body += figure_html(result.figure(), "Accuracy on unbiased images as more channels are "
                        "switched off at the cue: the cue-ranked ones (red) against random "
                        "ones (grey); dotted: unedited.")
    body += table_html(result.table)
    facts = {"cue_layer": best, "cue_accuracy_before": round(result.before, 3),
             "cue_accuracy_quarter_off": round(float(quarter["cue_channels_off"]), 3),
             "cue_accuracy_random_quarter_off": round(float(quarter["random_off_mean"]), 3)}
    return body, facts, {"cue_edit": result.table.to_dict("records")}


def _handmade_html(options: SectionOptions) -> str:
    import pandas as pd

    from seethrough.circuits.figures import circuit_figure
    from seethrough.circuits.handmade import ACCURACY, DESIGN, handmade_net, square_unit

    net = handmade_net()
    rows = [{"layer": layer, "unit": unit, "designed as": concept, "how": how}
            for layer, units in DESIGN.items() for unit, concept, how in units]
    frame = pd.DataFrame(rows)
    body = (f"<p>A network written by hand (<code>seethrough.circuits.handmade</code>): every "
            f"weight set by code, no training. It tells ConceptWorld's circles from squares "
            f"with accuracy {ACCURACY[0]:.3f} on {ACCURACY[1]} images. Its design, unit by "
            f"unit:</p>")
    body += "<details><summary>The design table</summary>" + table_html(frame) + "</details>"
    layers = list(DESIGN)
    unit = square_unit(HALF_SIDE_SHOWN, 0)
    body += figure_html(circuit_figure(net, layers[2], unit, count=3,
                                       steps=32 if options.quick else 96),
                        f"The hand-set square unit {unit} of {layers[2]}, read back by "
                        "circuit_weights: its strongest inputs are side units.")
    return body


#: the square unit shown from the hand-written network (half side in its layer's cells)
HALF_SIDE_SHOWN = 6.0


def section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Circuit figures, an edit with its measured effect, and the extras data names."""
    stages = stage_layers(model, tuple(data.images.shape[1:]))
    if len(stages) < 2:
        return Section("Circuits", "<p class=\"note\">Left out: the model has fewer than two "
                       "stages of convolutions to connect.</p>")
    body, notes, facts, tables = "", [], {}, {}
    try:
        body += _circuits_html(model, data, options, stages)
    except SeethroughError as error:
        notes.append(f"circuit figures left out: {error}")
    part, found, made = _edit_html(model, data, options, stages)
    body += part
    facts.update(found)
    tables.update(made)
    if "cue" in data.extra:
        part, found, made = _cue_html(model, data.extra["cue"], stages)
        body += "<h4>Switching off a shortcut</h4>" + part
        facts.update(found)
        tables.update(made)
    if data.extra.get("handmade"):
        body += "<h4>A network written by hand</h4>" + _handmade_html(options)
    return Section("Circuits", body, notes=notes, facts=facts, tables=tables)


def universality_section(model: nn.Module, data: SectionData,
                         options: SectionOptions) -> Section:
    """CKA between the stages of the model and of each model in ``data.extra["compare"]``."""
    import pandas as pd

    from seethrough.circuits.cka import cka_matrix
    from seethrough.circuits.matching import match_units

    dataset = data.extra.get("dataset", data.images)
    others = dict(data.extra.get("compare", {})) or {"itself": None}
    body, facts, tables = "", {}, {}
    for name, other in others.items():
        result = cka_matrix(model, other, dataset, names=("this model", name),
                            engine=options.engine, progress=options.progress)
        best = result.best_match()
        same = sum(a == b for a, b in zip(result.layers_a, best))
        caption = (f"Linear CKA (Kornblith et al. 2019) between the stages of this model "
                   f"(rows) and of {name} (columns), over {result.images} images, positions "
                   f"averaged.")
        if other is not None and result.layers_a == result.layers_b:
            caption += (f" The most similar layer of {name} is the same layer for {same} of "
                        f"{len(best)} layers.")
            facts[f"cka_same_layer {name}"] = f"{same}/{len(best)}"
        body += figure_html(result.figure(), caption)
        tables[f"cka {name}"] = result.to_frame().to_dict("records")
        if other is None or stages_differ(model, other, data):
            continue
        last = result.layers_a[-1]
        labels = None
        if data.concepts is not None:
            from seethrough.circuits.matching import dissection_labels
            from seethrough.dissection import dissect

            labels = [dissection_labels(dissect(net, [last], data.concepts, cache=False,
                                                progress=options.progress), last)
                      for net in (model, other)]
        rows = []
        for method in ("one_to_one", "semi"):
            matching = match_units(model, other, last, dataset, method=method,
                                   progress=options.progress)
            row = {"matching": method.replace("_", "-"), "units": len(matching.partner),
                   f"share with partner r > {PARTNER_R}": round(matching.share_above(PARTNER_R), 3),
                   "mean r": round(float(matching.scores.nanmean()), 3)}
            if labels is not None:
                row["matched pairs with the same dissection label"] = round(
                    matching.shared_labels(*labels), 3)
            rows.append(row)
        frame = pd.DataFrame(rows)
        body += (f"<p>Unit matching at {last} with {html.escape(name)} by activation "
                 f"correlation (Li et al. 2015): one-to-one (Hungarian) and semi-matching "
                 f"(each unit its best partner)"
                 + (", and how many matched pairs of detectors share their Network Dissection "
                    "label (among pairs where both units are detectors)" if labels else "")
                 + ".</p>") + table_html(frame)
        tables[f"matching {name}"] = frame.to_dict("records")
        facts[f"matched_share {name}"] = rows[0][f"share with partner r > {PARTNER_R}"]
    return Section("Universality", body, facts=facts, tables=tables)


def stages_differ(model: nn.Module, other: nn.Module, data: SectionData) -> bool:
    """Whether two models' stages differ in names or widths (no unit matching then)."""
    from seethrough.trace import capture

    stages = stage_layers(model, tuple(data.images.shape[1:]))
    if stages != stage_layers(other, tuple(data.images.shape[1:])):
        return True
    probe = data.images[:1]
    shapes = [capture(net, probe, stages[-1])[stages[-1]].output.shape for net in (model, other)]
    return shapes[0] != shapes[1]
