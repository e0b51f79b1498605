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

from seethrough.attribution.compare import report_options, run_methods
from seethrough.attribution.figures import methods_figure
from seethrough.attribution.section import attribute_all, grid_html, headline_facts
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
        body += table_html(ranked(frame))
        tables = {"attribution_ranking": ranked(frame).to_dict("records")}
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
        body += table_html(table)
        tables = {"attribution_faithfulness": table.to_dict("records")}
    return Section("Attribution", body, notes=notes, facts=headline_facts(model, results, data),
                   tables=tables)


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
#: a map "ignores the model" when its Spearman correlation with the fully randomized model's
#: map stays above this (Adebayo et al.'s edge detectors stay near 1)
SANITY_LIMIT = 0.5


def sanity_section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Adebayo et al.'s cascading randomization for two methods: do the maps depend on the
    weights? A method that passes loses its resemblance as the layers are re-initialised."""
    from seethrough.evaluation.sanity import model_randomization

    images = data.images[:4 if options.quick else 8]
    layers = cascade_layers(model)
    methods = [m for m in SANITY_METHODS if not options.methods or m in options.methods]
    methods = (methods or list(options.methods))[:1 if options.quick else 2]
    body, facts, notes = "", {}, []
    settings = report_options(options.quick, image_size=images.shape[-1])
    for method in methods:
        check = model_randomization(model, images, method, layers=layers, progress=options.progress,
                                    **settings.get(method, {}))
        final = float(check.mean()[-1])
        facts[method] = {"spearman": final, "passes": abs(final) < SANITY_LIMIT}
        body += figure_html(check.plot(), f"{method}: Spearman correlation of |map| with the "
                            "original as the layers are re-initialised from the top (lower: the "
                            "map depends on the weights)")
    verdict = [f"{m}: {'passes' if f['passes'] else 'FAILS'} (rho {f['spearman']:.2f})"
               for m, f in facts.items()]
    notes.append(f"{len(images)} images; cascade: {', '.join(layers)}; a method fails when "
                 f"|rho| stays >= {SANITY_LIMIT} with every layer randomized.")
    return Section("Sanity check", f"<p>{'; '.join(verdict)}.</p>" + body, notes=notes,
                   facts={"methods": facts})


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
