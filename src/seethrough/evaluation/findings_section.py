"""The report section "What extremal perturbations find": Fong's four findings, measured.

``section(model, data, options)`` runs the experiments of ``seethrough.evaluation.findings``
on any model: an ``extremal_sweep`` of the images at every area of ``AREAS`` (foreground
sufficiency against ``data.masks`` where given, background overdrive), large objects by the
same sweep on closer crops of the images (``zoom_sweep``), and cumulative objects on mosaics of
the images (``photo_mosaics``). Where the model classifies ConceptWorld's shapes and
``data.extra["world_scenes"]`` says so (a dict of ``size`` and ``seed``, or ``True``), the
last two run on ConceptWorld scenes instead, with the true object sizes and instance masks.

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> data = SectionData(torch.rand(1, 3, 32, 32))
    >>> section(model, data, SectionOptions(quick=True), iterations=2).title   # doctest: +SKIP
    'What extremal perturbations find'
"""
from __future__ import annotations

import html
import math

import torch
from torch import nn

from seethrough.evaluation.findings import (
    AREAS,
    PAPER_ITERATIONS,
    QUICK_ITERATIONS,
    RADII,
    ZOOMS,
    compressed_schedule,
    cumulative_objects,
    extremal_sweep,
    instance_scenes,
    object_sizes,
    photo_mosaics,
    zoom_sweep,
)
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, table_html

TITLE = "What extremal perturbations find"
#: images swept at most (each is len(AREAS) masks of 800 iterations), quick and full
IMAGES = {True: 2, False: 8}
#: above this side, a CPU run sweeps at most 2 images at 2 zooms (the mask generator and the
#: model cost grow with the pixels: 8 photos at 3 zooms would take hours at 224 px)
LARGE = 128
#: iterations per mask in the report, quick and full: the paper's schedule compressed
#: (``compressed_schedule``; 200 steps reach every area on ConceptNet), so that the section
#: takes minutes, not hours, on a CPU; ``seethrough findings`` runs the paper's 800
REPORT_ITERATIONS = {True: QUICK_ITERATIONS, False: 200}


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def section(model: nn.Module, data: SectionData, options: SectionOptions, *,
            iterations: int | None = None) -> Section:
    """The four findings on ``data`` (see the module doc). Extremal perturbation runs the
    paper's schedule compressed into ``iterations`` steps (``compressed_schedule``; default
    ``REPORT_ITERATIONS``), or the paper's own with ``iterations=800``."""
    from seethrough.results import image_row_figure, image_uint8

    quick = options.quick
    iterations = iterations or REPORT_ITERATIONS[quick]
    large = data.images.shape[-1] > LARGE
    light = quick or large
    shown = data.first(2 if large else IMAGES[quick])
    images, names = shown.images, shown.names
    target = shown.labels if shown.labels is not None else "predicted"
    settings = compressed_schedule(iterations) if iterations != PAPER_ITERATIONS else {}
    scenes = data.extra.get("world_scenes")
    body, facts, tables, notes = [], {}, {}, []
    body.append(f"<p>Fong, Patrick &amp; Vedaldi (2019) close with four things extremal "
                f"perturbations show. Each is measured here: extremal perturbation "
                f"(<code>preserve</code>, the paper's settings"
                f"{'' if not settings else f', its schedule compressed into {iterations} steps'}"
                f") at areas "
                f"{', '.join(f'{a:.1%}' for a in AREAS)}, and the class {html.escape('logit')} "
                f"of each preserved image (the rest blurred as the method blurs it).</p>")

    # 1 and 4 (and 2 on photos): one sweep of the images, at zoom 1 among the zooms
    if scenes:
        sweep = extremal_sweep(model, images, target, objects=shown.masks, **settings)
        zooms = None
    else:
        zooms = zoom_sweep(model, images, target, zooms=(1.0, 2.0) if light else ZOOMS,
                           **settings)
        sweep = zooms.select("zoom 1")
        if shown.masks is not None:
            sweep.objects = shown.masks.bool().cpu()
    summary = sweep.summary()
    facts["foreground_sufficient"] = {k: summary[k] for k in (
        "kept_share", "median_sufficient_area", "mean_object_share", "mean_object_coverage",
        "mean_object_area")}
    facts["background_overdrive"] = {k: summary[k] for k in ("overdriven_share",
                                                               "median_overdrive")}
    tables["findings_sweep"] = sweep.to_frame().to_dict("records")

    text = (f"<h4>1. Foreground evidence is usually sufficient</h4><p>The smallest area whose "
            f"preserved image keeps &ge; {sweep.threshold:.0%} of the class score: median "
            f"{_percent(summary['median_sufficient_area'])} of the image; some area keeps it "
            f"in {_percent(summary['kept_share'])} of {summary['images']} images.")
    if shown.masks is not None:
        text += (f" Of that mask, {_percent(summary['mean_object_share'])} lies on the object, "
                 f"which covers {_percent(summary['mean_object_area'])} of the image (the "
                 f"share a mask placed at random would have); it covers "
                 f"{_percent(summary['mean_object_coverage'])} of the object.")
    body.append(text + "</p>")
    preserved = sweep.preserved_images(images)
    ratios, titles = sweep.ratio(), []
    for index, (name, first) in enumerate(zip(names, sweep.sufficient().tolist())):
        if first < 0:
            titles.append(f"{name}: no area keeps {sweep.threshold:.0%}")
        else:
            titles.append(f"{name}: {sweep.areas[first]:.1%} keeps "
                          f"{float(ratios[index, first]):.0%}")
    body.append(figure_html(
        image_row_figure([image_uint8(p) for p in preserved], titles),
        "Each image preserved by its smallest sufficient mask (the rest blurred)."))

    body.append("<h4>2. Large objects are recognized by their details</h4>")
    if scenes:
        world = scenes if isinstance(scenes, dict) else {}
        sizes = object_sizes(model, radii=RADII[::3] if quick else RADII,
                             per_size=2 if quick else 8, **world, **settings)
        table = sizes.by_group()
        body.append(f"<p>ConceptWorld scenes of one object of radius "
                    f"{', '.join(f'{r:g}' for r in (RADII[::3] if quick else RADII))} of the side. "
                    f"The sufficient area against the object's area (area_per_object: their "
                    f"ratio, median): a network that needs the whole object keeps it near 1 "
                    f"or above; one that recognizes large objects by details lets it fall as "
                    f"the object grows.</p>")
        figure = sizes.plot()
    else:
        table = zooms.by_group().drop(columns=["object_area", "area_per_object"])
        body.append("<p>Without object masks, the object is made larger by cropping closer: "
                    "zoom z makes it z&sup2; times larger in area. A network that recognizes "
                    "it by its details needs no more area as it grows.</p>")
        figure = zooms.plot()
    body.append(table_html(table))
    body.append(figure_html(figure, "Preserved score / original score against the area "
                            "(median per group); dashed: the threshold."))
    facts["large_objects"] = table.to_dict("records")
    tables["findings_sizes"] = table.to_dict("records")

    body.append("<h4>3. Multiple objects contribute cumulatively</h4>")
    if scenes:
        world = scenes if isinstance(scenes, dict) else {}
        made = instance_scenes(per_count=2 if quick else 8,
                               **{k: v for k, v in world.items() if k in ("seed", "size")})
        curves = cumulative_objects(model, made["image"], made["instances"], made["label"],
                                    counts=made["counts"], batch_size=32)
        example = made["image"][made["counts"] == 3][0]
        masks = made["instances"][made["counts"] == 3][0]
        body.append("<p>ConceptWorld scenes with 1, 2 and 3 instances of the class; the true "
                    "instances are preserved one by one (the rest blurred).</p>")
    else:
        made = photo_mosaics(images[:1] if light else images)
        with torch.no_grad():
            classes = model(images[:1] if light else images).argmax(1)
        curves = cumulative_objects(model, made["image"], made["instances"],
                                    classes[made["source"]], counts=made["counts"])
        example = made["image"][made["counts"] == 3][0]
        masks = made["instances"][made["counts"] == 3][0]
        body.append("<p>Mosaics of each photo: 1, 2 or 3 half-size copies on grey, the class "
                    "predicted on the photo; the copies are preserved one by one (the rest "
                    "blurred).</p>")
    summary3 = curves.summary()
    facts["cumulative_objects"] = {str(k): v for k, v in summary3.items()}
    tables["findings_instances"] = curves.to_frame().to_dict("records")
    lines = [f"{count} instance{'s' * (count > 1)}: every instance adds in "
             f"{_percent(v['cumulative_share'])} of {v['scenes']} scenes; mean score "
             f"{' &rarr; '.join(f'{s:.2f}' for s in v['mean_scores'])}"
             for count, v in summary3.items()]
    body.append("<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>")
    steps = _instance_steps(model, example, masks, curves)
    body.append(figure_html(curves.plot(), "Mean score as instances are preserved."))
    body.append(figure_html(image_row_figure(*steps), "A 3-instance scene, instances "
                            "preserved one by one (score above each)."))

    body.append(f"<h4>4. Suppressing the background may overdrive the network</h4><p>In "
                f"{_percent(summary['overdriven_share'])} of the images some preserved image "
                f"scores higher than the whole image; by a median of "
                f"{_percent(summary['median_overdrive'])} over it where it does.</p>")
    body.append(figure_html(sweep.plot(names), "Preserved score / original score against the "
                            "area; above the solid line the preserved image beats the whole "
                            "image."))
    notes.append(f"{len(images)} images, {iterations} iterations per mask; the score is the "
                 f"class logit; threshold {sweep.threshold:.0%} of the original.")
    if large and not quick:
        notes.append(f"Images larger than {LARGE} px: the first 2 images at zooms 1 and 2 "
                     "(a CPU run of more would take hours).")
    return Section(TITLE, "\n".join(body), notes=notes, facts=facts, tables=tables)


def _instance_steps(model, image, masks, curves) -> tuple[list, list[str]]:
    """The images of one scene with 0, 1, 2, 3 instances preserved, and their titles."""
    from seethrough.attribution.extremal import blur_pyramid, perturb
    from seethrough.results import image_uint8

    scale = min(image.shape[-2:]) / 224
    pyramid = blur_pyramid(image[None], 8, 20.0 * scale)
    row = int((curves.counts == 3).nonzero()[0])
    pictures, titles = [], []
    for kept in range(4):
        mask = masks[:kept].any(0, keepdim=True)[None].to(image) if kept else \
            torch.zeros(1, 1, *image.shape[-2:], dtype=image.dtype)
        pictures.append(image_uint8(perturb(pyramid, mask)[0]))
        titles.append(f"{kept} kept: {float(curves.scores[row, kept]):.2f}")
    return pictures, titles


__all__ = ["TITLE", "section"]
