"""The checked attribution section of a report, for any model, and the shortcut section.

``section``: every attribution method on the images (``attribution.section``); where
``data.masks`` gives the objects' true outlines, the methods ranked on them (pointing game,
energy, IoU, deletion, insertion, the sanity check, time per image).

``shortcut_section``: several models on images that carry a shortcut cue
(``data.extra["cue_masks"]``): how much of each method's map lands on the cue and on the
object. A model that cheats puts its evidence on the cue.

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> masks = torch.zeros(2, 32, 32, dtype=torch.bool); masks[:, 8:24, 8:24] = True
    >>> data = SectionData(torch.rand(2, 3, 32, 32), masks=masks)
    >>> "pointing" in section(model, data, SectionOptions(quick=True, methods=["saliency"])).body
    True
"""
from __future__ import annotations

import html
from dataclasses import replace

from torch import nn

from seethrough.attribution.compare import guide_frame, report_options, run_methods, with_family
from seethrough.attribution.figures import methods_figure
from seethrough.attribution.section import SHOWN, attribute_all, grid_html, headline_facts
from seethrough.evaluation.localization import energy_pointing_game
from seethrough.evaluation.ranking import ranked, score_methods
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

#: deletion / insertion steps per image when there are no masks (RISE uses one row per step)
FAITHFULNESS_STEPS = 16
#: the methods compared in the shortcut section
SHORTCUT_METHODS = ("saliency", "integrated_gradients", "gradcam", "scorecam", "occlusion")

RANKING_TEXT = (
    "Pointing game: the map's maximum within 15 px at 224 px (scaled) of the object. Energy: "
    "share of positive map energy on the object. IoU: top 20% of the map vs the object. "
    "Deletion (lower is better) and insertion (higher is better): area under the probability "
    "curve as pixels are removed (to black) / restored (from a blur) in map order, two rows of "
    "pixels per step (RISE). Sanity: Spearman correlation of the maps before and after "
    "re-initialising every weight (lower is better). Time: seconds per image on this machine.")


def section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Every method on ``data``; ranked on the object masks when there are some."""
    results, notes, shown = attribute_all(model, data, options)
    body = grid_html(model, shown, results)
    if data.masks is not None:
        frame = score_methods(model, shown.images, results, masks=shown.masks,
                              sanity_images=4 if options.quick else 8,
                              step=2 * shown.images.shape[-1], progress=options.progress)
        body += (f"<p>Methods ranked on {len(shown.images)} images with known object masks. "
                 f"{html.escape(RANKING_TEXT)}</p>")
        body += table_html(with_family(ranked(frame)))
        tables = {"attribution_ranking": with_family(ranked(frame)).to_dict("records")}
    else:  # no ground truth: how faithful each map is, by deletion and insertion
        count = min(len(shown.images), 4 if options.quick else 8)
        subset = {name: (replace(result, maps=result.maps[:count], raw=None, goal=None,
                                 target=None if result.target is None else result.target[:count]),
                         seconds) for name, (result, seconds) in results.items()}
        pixels = shown.images.shape[-2] * shown.images.shape[-1]
        frame = score_methods(model, shown.images[:count], subset,
                              step=-(-pixels // FAITHFULNESS_STEPS), progress=options.progress)
        columns = ["method", "deletion", "insertion", "seconds_per_image"]
        table = frame[columns].sort_values("deletion", kind="stable", ignore_index=True)
        body += (f"<p>Without object masks, the methods are scored on how faithful their maps "
                 f"are, on {count} images: deletion (lower is better) and insertion (higher is "
                 f"better), the area under the probability of the explained class as pixels are "
                 f"removed (to black) / restored (from a blur) in map order, in "
                 f"{FAITHFULNESS_STEPS} steps (RISE). Time: seconds per image.</p>")
        body += table_html(with_family(table))
        tables = {"attribution_faithfulness": with_family(table).to_dict("records")}
    body += ("<details><summary>The methods: when to use each</summary>"
             + table_html(guide_frame(list(results))) + "</details>")
    figures, table_part, table = _channels_and_segments(model, shown, results)
    body += figures + table_part
    if table is not None:
        tables["grabcut"] = table.to_dict("records")
    return Section("Attribution", body, notes=notes, facts=headline_facts(model, results, data),
                   tables=tables)


#: the map GrabCut segments in the report, when the section ran it (else the first method's)
SEGMENT_METHOD = "gradcam"


def _channels_and_segments(model: nn.Module, data: SectionData, results: dict):
    """Which channels of the CAM layer carry each decision, and the object GrabCut cuts out of
    a map (scored on the true masks when there are some): two figures and the IoU table."""
    import pandas as pd

    from seethrough.attribution.channels import channel_attribution
    from seethrough.attribution.figures import channels_figure, segments_figure
    from seethrough.attribution.layers import default_layer
    from seethrough.attribution.segment import centre_box, grabcut
    from seethrough.evaluation.localization import iou

    shown = data.first(SHOWN)
    first, _ = next(iter(results.values()))
    target = "predicted" if first.target is None else first.target[:SHOWN]
    layer = default_layer(model)
    scores = channel_attribution(model, shown.images, layer, target, keep_maps=True)
    body = ""
    if scores.maps is not None:
        body += figure_html(channels_figure(shown.images, scores, row_titles=shown.names),
                            f"Channel attribution at {layer}: each image's four channels with "
                            "the largest gradient x activation (their share of the score), and "
                            "where in the image that share comes from.")
    method = SEGMENT_METHOD if SEGMENT_METHOD in results else next(iter(results))
    result = results[method][0]
    segments = grabcut(data.images, result)
    table = None
    text = f"GrabCut (Rother et al. 2004) started from {method}'s map"
    if data.masks is not None:
        table = pd.DataFrame({"segmentation": [f"GrabCut from {method}", "centred box (25%)"],
                              "mean IoU with the object": [
                                  float(iou(segments, data.masks).nanmean()),
                                  float(iou(centre_box(*segments.shape), data.masks).nanmean())],
                              "images": len(data.images)}).round(3)
        text += (f": mean IoU with the true object {table.iloc[0, 1]:.2f} on "
                 f"{len(data.images)} images, against {table.iloc[1, 1]:.2f} for a centred box")
    body += figure_html(segments_figure(shown.images, result.maps[:SHOWN], segments[:SHOWN],
                                        masks=None if shown.masks is None else shown.masks,
                                        row_titles=shown.names), text + ".")
    return body, table_html(table) if table is not None else "", table


def cascade_layers(model: nn.Module, stages: int = 5) -> list[str]:
    """The randomization cascade of the report: the classifier, then ``stages`` of the network's
    stages, top down (each re-initialised whole)."""
    from seethrough.core.layer_table import spread, stage_layers

    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    found = spread(stage_layers(model), stages)[::-1]
    return linears[-1:] + found if found or linears else [
        name for name, child in model.named_children() if any(True for _ in child.parameters())][::-1]


#: the methods the sanity section checks (a CAM and a gradient: the two families it tells apart)
SANITY_METHODS = ("gradcam", "saliency")
#: the methods compared on a model trained on shuffled labels (data randomization)
DATA_METHODS = ("gradcam", "saliency", "guided_backprop", "integrated_gradients")
#: a map "ignores the model" when its Spearman correlation with the fully randomized model's
#: map stays above this (Adebayo et al.'s edge detectors stay near 1)
SANITY_LIMIT = 0.5


def sanity_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Adebayo et al.'s sanity checks: cascading and independent model randomization for two
    methods (do the maps depend on the weights?) and, when ``data.extra["shuffled"]`` holds the
    same architecture trained on shuffled labels, data randomization (do they depend on what
    the labels taught?). A method that passes loses its resemblance in both."""
    from seethrough.evaluation.sanity import model_randomization, randomization_figure

    images = data.images[:4 if options.quick else 8]
    layers = cascade_layers(model)
    methods = [m for m in SANITY_METHODS if not options.methods or m in options.methods]
    methods = (methods or list(options.methods))[:1 if options.quick else 2]
    body, facts, notes = "", {}, []
    settings = report_options(options.quick, image_size=images.shape[-1])
    for method in methods:
        checks = [model_randomization(model, images, method, layers=layers, mode=mode,
                                      progress=options.progress, **settings.get(method, {}))
                  for mode in ("cascading", "independent")]
        final = float(checks[0].mean()[-1])
        facts[method] = {"spearman": final, "passes": abs(final) < SANITY_LIMIT,
                         "independent": dict(zip(layers, checks[1].mean()[1:].tolist()))}
        body += figure_html(randomization_figure(checks), f"{method}: Spearman correlation of "
                            "|map| with the original as the layers are re-initialised from the "
                            "top (cascading) or one at a time (independent); lower: the map "
                            "depends on the weights")
    verdict = [f"{m}: {'passes' if f['passes'] else 'FAILS'} (rho {f['spearman']:.2f})"
               for m, f in facts.items()]
    notes.append(f"{len(images)} images; cascade: {', '.join(layers)}; a method fails when "
                 f"|rho| stays >= {SANITY_LIMIT} with every layer randomized.")
    body = f"<p>{'; '.join(verdict)}.</p>" + body
    tables = {}
    if data.extra.get("shuffled") is not None:
        table, html_part = _data_randomization(model, data, options, settings)
        body += html_part
        tables["data_randomization"] = table.to_dict("records")
        facts["data_randomization"] = dict(zip(table["method"], table["spearman_abs_mean"]))
    return Section("Sanity check", body, notes=notes, facts={"methods": facts}, tables=tables)


def _data_randomization(model: nn.Module, data: SectionData, options: SectionOptions,
                        settings: dict):
    """The data-randomization table and figure (Adebayo et al.'s second test)."""
    from seethrough.evaluation.data_randomization import data_randomization

    count = 8 if options.quick else 16
    images = data.images[:count]
    labels = data.labels[:count] if data.labels is not None else "predicted"
    methods = [m for m in DATA_METHODS if not options.methods or m in options.methods]
    methods = (methods or list(options.methods))[:2 if options.quick else len(DATA_METHODS)]
    result = data_randomization(model, data.extra["shuffled"], images, methods, labels,
                                options=settings)
    table = result.to_frame().round(3)
    text = (f"<p>Data randomization: Spearman rank correlation between each method's maps for "
            f"this model and for the same architecture trained on shuffled labels (it can only "
            f"memorise), on {len(images)} images, the "
            f"{'true' if data.labels is not None else 'predicted'} class in both. High: the "
            f"method shows the same thing whatever the labels taught the model.</p>")
    return table, text + figure_html(result.plot(), "Lower is better: bars |map|, dots the "
                                     "signed maps") + table_html(table)


def shortcut_section(models: dict[str, nn.Module], data: SectionData,
                     options: SectionOptions) -> Section:
    """Where each model's evidence lies on images with a shortcut cue (see the module doc)."""
    import pandas as pd

    cues = data.extra["cue_masks"]
    methods = options.methods or list(SHORTCUT_METHODS)
    settings = report_options(options.quick, image_size=data.images.shape[-1])
    results = {name: run_methods(model, data.images, methods, options=settings,
                                 progress=options.progress) for name, model in models.items()}
    rows = []
    for method in methods:
        row = {"method": method}
        for name in models:
            maps = results[name][method][0]
            row[f"on cue: {name}"] = float(energy_pointing_game(maps, cues).nanmean())
            if data.masks is not None:
                row[f"on object: {name}"] = float(energy_pointing_game(maps, data.masks).nanmean())
        rows.append(row)
    paired = {f"{name}: {method}": results[name][method]
              for method in methods[:2] for name in models}
    shown = min(4, len(data.images))
    body = figure_html(
        methods_figure(data.images[:shown], paired, masks=cues[:shown]),
        "White outline: the shortcut cue. A model that cheats looks at the cue, not the object.")
    body += (f"<p>Share of positive map energy on the cue (it covers {float(cues.float().mean()):.1%}"
             f" of the image) and on the object, {len(data.images)} images, predicted class.</p>")
    body += table_html(pd.DataFrame(rows))
    return Section("Shortcuts", body, notes=[f"Settings: {settings}."])


__all__ = ["cascade_layers", "sanity_section", "section", "shortcut_section"]
